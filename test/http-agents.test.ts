// The pull-agent protocol end to end over HTTP on the real dev server: long-poll, heartbeat,
// complete; results back on (a fake) Forgejo and callback URLs; one winner among many pollers;
// dropped connections and API restarts lose nothing; runtime registration.
import { once } from 'node:events';
import { request as httpRequest } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { FakeForgejo } from './support/fake-forgejo';
import { forgejoRequest, issueAssigned } from './support/forgejo-fixtures';
import { ADMIN, adminAuth, agent, dequeue, enqueue, FORGEJO_TOKEN, SECRET, startHarness, taskUrl, type Harness } from './support/http';
import { uniqueRepo, waitFor } from './support/temporal';

const A1 = agent('a1', ['dev']);
const A2 = agent('a2', ['dev']);
const RACERS = Array.from({ length: 8 }, (_, i) => agent(`racer-${i}`, ['race']));
const DROP = [agent('drop-1', ['drop']), agent('drop-2', ['drop'])];
const RESTART = agent('restart-1', ['restart']);
const DOWN = agent('down-1', ['down']);
const GONE = agent('gone-1', ['gone']);
const CANCEL = agent('cancel-1', ['cancel']);

let h: Harness;
let app: FastifyInstance;
let forgejo: FakeForgejo;

beforeAll(async () => {
  forgejo = await FakeForgejo.start();
  h = await startHarness({
    forgejo: { url: forgejo.url, token: FORGEJO_TOKEN },
    types: ['dev', 'reviewer', 'boss', 'race', 'drop', 'restart', 'down', 'gone', 'cancel', 'reg'],
    agents: [A1, A2, ...RACERS, ...DROP, RESTART, DOWN, GONE, CANCEL].map((a) => a.config),
  });
  await h.startWorker();
  app = await h.app();
});
afterAll(async () => {
  await h?.close();
  await forgejo?.close();
});

/** Agents waiting in a long-poll on this app, from its metrics. */
async function waitingOn(instance: FastifyInstance): Promise<number> {
  const res = await instance.inject({ method: 'GET', url: '/metrics' });
  return Number(/^drover_dequeue_waiting (\d+)$/m.exec(res.body)?.[1] ?? NaN);
}

async function listen(instance: FastifyInstance): Promise<string> {
  await instance.listen({ host: '127.0.0.1', port: 0 });
  return `http://127.0.0.1:${(instance.server.address() as AddressInfo).port}`;
}

describe('a long-polling agent', () => {
  test('receives the task a webhook makes, heartbeats and completes; comments and callback carry the result', async () => {
    const repo = uniqueRepo();
    const polling = dequeue(app, A1, 15);
    const { body, headers } = forgejoRequest(issueAssigned(repo, 42, ['drover-dev'], { title: 'Dark mode' }), SECRET);
    const hook = await app.inject({ method: 'POST', url: '/api/v1/webhooks/forgejo', headers, payload: body });
    expect(hook.statusCode).toBe(202);
    const taskId = hook.json().task_id as string;

    const got = await polling;
    expect(got.statusCode).toBe(200);
    const grant = got.json();
    expect(grant).toMatchObject({ task_id: taskId, attempt: 1, agent_type: 'dev', kind: 'implement', repo, number: 42, title: 'Dark mode', lease_ms: 15_000 });
    expect(grant.prompt).toContain('Dark mode');
    expect(Date.parse(grant.lease_expires_at)).toBeGreaterThan(Date.now());

    const beat = await app.inject({ method: 'POST', url: taskUrl(taskId, 'heartbeat'), headers: A1.auth, payload: { agent_id: 'a1', attempt: 1 } });
    expect(beat.statusCode, beat.body).toBe(200);
    expect(beat.json()).toMatchObject({ task_id: taskId, attempt: 1, cancel_requested: false });
    // The grant's lease is the confirm window (tasks.claimConfirm); the first heartbeat gives the whole lease (30 s here).
    expect(beat.json().lease_ms_left).toBeGreaterThan(15_000);

    const done = await app.inject({
      method: 'POST',
      url: taskUrl(taskId, 'complete'),
      headers: A1.auth,
      payload: { agent_id: 'a1', attempt: 1, summary: 'Added a dark theme toggle', branch: 'dark-mode', rev: 'abc1234' },
    });
    expect(done.statusCode).toBe(200);
    expect(done.json()).toMatchObject({ state: 'completed', result: { outcome: 'success', branch: 'dark-mode', rev: 'abc1234' } });

    const final = await h.tasks.result(taskId); // closes only once its reports are delivered
    // The same report again, after the task closed (its first answer was lost on the way): the
    // same answer, not "the task is no longer yours".
    const again = await app.inject({
      method: 'POST',
      url: taskUrl(taskId, 'complete'),
      headers: A1.auth,
      payload: { agent_id: 'a1', attempt: 1, summary: 'Added a dark theme toggle', branch: 'dark-mode', rev: 'abc1234' },
    });
    expect(again.statusCode, again.body).toBe(200);
    expect(again.json()).toMatchObject({ state: 'completed', result: { outcome: 'success', branch: 'dark-mode' } });
    const otherAgent = await app.inject({ method: 'POST', url: taskUrl(taskId, 'fail'), headers: A2.auth, payload: { agent_id: 'a2', attempt: 1, summary: 'not mine' } });
    expect(otherAgent.statusCode).toBe(409);
    expect(final.state).toBe('completed');
    const comments = forgejo.commentsOn(repo, 42);
    expect(comments).toHaveLength(2);
    const [started, succeeded] = comments.map((c) => c.body);
    expect(started).toContain('started');
    expect(started).toContain('pull agent a1');
    expect(started).toContain('http_pull');
    expect(succeeded).toContain('succeeded');
    expect(succeeded).toContain('Added a dark theme toggle');
    expect(succeeded).toContain('`dark-mode`');
    expect(succeeded).toContain('`abc1234`');
    expect(succeeded).toContain(`http://ui.test/namespaces/${h.namespace}/workflows/`);
    // The [task] link is the task's read-only page, which a person opens without a token.
    const page = /\[task\]\((http:\/\/drover\.test(\/t\/[^)?]+\?sig=[0-9a-f]{32}))\)/.exec(succeeded ?? '');
    expect(page?.[2], succeeded).toMatch(new RegExp(`^/t/${encodeURIComponent(taskId)}\\?sig=`));
    const opened = await app.inject({ method: 'GET', url: page![2]! });
    expect(opened.statusCode).toBe(200);
    expect(opened.headers['content-type']).toContain('text/html');
    expect(opened.body).toContain('Added a dark theme toggle');
    expect(opened.body).toContain('dark-mode');
    expect(opened.body).not.toContain(grant.prompt.slice(0, 40)); // no prompt on the page
    // A wrong or missing signature is no page, and tells nothing about the task.
    for (const url of [page![2]!.replace(/sig=[0-9a-f]/, 'sig=g'), `/t/${encodeURIComponent(taskId)}`, `/t/${encodeURIComponent(taskId)}?sig=${'0'.repeat(32)}`]) {
      const refused = await app.inject({ method: 'GET', url });
      expect(refused.statusCode, url).toBe(404);
      expect(refused.json().code).toBe('task_not_found');
    }
  });

  test('a task’s callback URL receives the same JSON for each event', async () => {
    const taskId = await enqueue(app, { agent_type: 'dev', title: 'with callback', prompt: 'do it', callback_url: `${forgejo.url}/callback/one` });
    const got = await dequeue(app, A2, 10);
    expect(got.json().task_id).toBe(taskId);
    await app.inject({ method: 'POST', url: taskUrl(taskId, 'complete'), headers: A2.auth, payload: { agent_id: 'a2', attempt: 1, outcome: 'fork', summary: 'forked it' } });
    await h.tasks.result(taskId);
    const calls = forgejo.callbacks('/callback/one');
    expect(calls.map((c) => (c.body as { event: string }).event)).toEqual(['started', 'forked']);
    expect(calls[1]!.body).toMatchObject({ task_id: taskId, state: 'completed', mode: 'http_pull', agent: { kind: 'agent', id: 'a2' }, outcome: 'fork', summary: 'forked it' });
    const { runId } = await h.tasks.status(taskId);
    expect(calls[1]!.headers['x-drover-event-id']).toBe(`${taskId}/${runId}/forked/1`);
    expect(calls[1]!.body).toMatchObject({ event_id: `${taskId}/${runId}/forked/1` });
  });

  test('only the lease holder may heartbeat or finish; a wrong token is 401', async () => {
    const taskId = await enqueue(app, { agent_type: 'dev', title: 'holder checks', prompt: 'p' });
    const got = await dequeue(app, A1, 10);
    expect(got.json().task_id).toBe(taskId);
    const asOther = await app.inject({ method: 'POST', url: taskUrl(taskId, 'heartbeat'), headers: A2.auth, payload: { agent_id: 'a2', attempt: 1 } });
    expect(asOther.statusCode).toBe(409);
    expect(asOther.json().code).toBe('not_lease_holder');
    const stale = await app.inject({ method: 'POST', url: taskUrl(taskId, 'complete'), headers: A1.auth, payload: { agent_id: 'a1', attempt: 2, summary: 'x' } });
    expect(stale.statusCode).toBe(409);
    expect(stale.json().code).toBe('stale_attempt');
    const impostor = await app.inject({ method: 'POST', url: taskUrl(taskId, 'heartbeat'), headers: A2.auth, payload: { agent_id: 'a1', attempt: 1 } });
    expect(impostor.statusCode).toBe(401);
    expect(impostor.json().code).toBe('bad_token');
    const noToken = await app.inject({ method: 'POST', url: taskUrl(taskId, 'heartbeat'), payload: { agent_id: 'a1', attempt: 1 } });
    expect(noToken.statusCode).toBe(401);
    const failed = await app.inject({ method: 'POST', url: taskUrl(taskId, 'fail'), headers: A1.auth, payload: { agent_id: 'a1', attempt: 1, summary: 'could not build' } });
    expect(failed.statusCode).toBe(200);
    expect(failed.json()).toMatchObject({ state: 'failed', result: { outcome: 'fail', summary: 'could not build' } });
    const late = await app.inject({ method: 'POST', url: taskUrl(taskId, 'heartbeat'), headers: A1.auth, payload: { agent_id: 'a1', attempt: 1 } });
    expect(late.statusCode).toBe(409);
    expect(late.json().code).toBe('task_closed');
    const unknown = await app.inject({ method: 'POST', url: taskUrl('implement:no:such:1', 'heartbeat'), headers: A1.auth, payload: { agent_id: 'a1', attempt: 1 } });
    expect(unknown.statusCode).toBe(404);
    expect(unknown.json().code).toBe('task_not_found');
  });

  test('cancel reaches the agent in its heartbeat answer; cancelling its current task through the agent works too', async () => {
    const taskId = await enqueue(app, { agent_type: 'cancel', title: 'to cancel', prompt: 'p' });
    const got = await dequeue(app, CANCEL, 10);
    expect(got.json().task_id).toBe(taskId);
    const idle = await app.inject({ method: 'POST', url: '/api/v1/agents/a2/cancel', headers: adminAuth });
    expect(idle.statusCode).toBe(409);
    expect(idle.json().code).toBe('agent_idle');
    const nobody = await app.inject({ method: 'POST', url: '/api/v1/agents/nobody/cancel', headers: adminAuth });
    expect(nobody.statusCode).toBe(404);
    const cancel = await app.inject({ method: 'POST', url: '/api/v1/agents/cancel-1/cancel', headers: adminAuth, payload: { reason: 'wrong issue' } });
    expect(cancel.statusCode).toBe(200);
    expect(cancel.json()).toEqual({ cancelled: [taskId] });
    const beat = await app.inject({ method: 'POST', url: taskUrl(taskId, 'heartbeat'), headers: CANCEL.auth, payload: { agent_id: 'cancel-1', attempt: 1 } });
    expect(beat.statusCode).toBe(200);
    expect(beat.json().cancel_requested).toBe(true);
    await app.inject({ method: 'POST', url: taskUrl(taskId, 'fail'), headers: CANCEL.auth, payload: { agent_id: 'cancel-1', attempt: 1, summary: 'stopped' } });
    expect((await h.tasks.result(taskId)).state).toBe('cancelled');
  });

  test('nothing to do: 204 when the wait ends, at once for wait=0', async () => {
    const res = await dequeue(app, A1, 0);
    expect(res.statusCode).toBe(204);
    const longer = await dequeue(app, A1, 0.3);
    expect(longer.statusCode).toBe(204);
  });

  test('one agent holds at most api.maxPollsPerAgent long-polls on a process: more get 429', async () => {
    const POLLER = agent('poller-1', ['nothing-here']);
    const capped = await h.app({ config: { ...h.config, agents: [...h.config.agents, { ...POLLER.config, labels: {} }], types: [...h.config.types, 'nothing-here'] } });
    const open = [dequeue(capped, POLLER, 2), dequeue(capped, POLLER, 2)];
    await new Promise((r) => setTimeout(r, 300));
    const third = await dequeue(capped, POLLER, 2);
    expect(third.statusCode).toBe(429);
    expect(third.json().code).toBe('too_many_polls');
    expect(third.headers['retry-after']).toBe('1');
    expect((await Promise.all(open)).map((r) => r.statusCode)).toEqual([204, 204]);
    expect((await dequeue(capped, POLLER, 0)).statusCode).toBe(204); // the count went down again
  });
});

describe('results on Forgejo', () => {
  test('Forgejo down for a while: the comments are delayed, not lost nor doubled, and the task does not fail', async () => {
    const repo = uniqueRepo();
    forgejo.mode = 'down';
    // Each try of a report calls the comments API (later tries first look for an earlier comment).
    const tries = () => forgejo.requests.filter((r) => r.path.includes(`/${repo.split('/')[1]}/issues/5/comments`)).length;
    try {
      const { body, headers } = forgejoRequest(issueAssigned(repo, 5, ['down']), SECRET);
      await app.inject({ method: 'POST', url: '/api/v1/webhooks/forgejo', headers, payload: body });
      const got = await dequeue(app, DOWN, 10);
      expect(got.statusCode).toBe(200);
      const taskId = got.json().task_id as string;
      const done = await app.inject({ method: 'POST', url: taskUrl(taskId, 'complete'), headers: DOWN.auth, payload: { agent_id: 'down-1', attempt: 1, summary: 'done while Forgejo was down' } });
      expect(done.json().state).toBe('completed');
      // Several tries fail while Forgejo is down…
      await waitFor(() => (tries() >= 4 ? true : undefined), 'comment retries during the outage');
      expect(forgejo.commentsOn(repo, 5)).toHaveLength(0);
      forgejo.mode = 'up';
      // …then both comments arrive, once each, and the task closes completed.
      const final = await h.tasks.result(taskId);
      expect(final.state).toBe('completed');
      const comments = forgejo.commentsOn(repo, 5).map((c) => c.body);
      expect(comments.filter((c) => c.includes('/started/1 -->'))).toHaveLength(1);
      expect(comments.filter((c) => c.includes('/succeeded/1 -->'))).toHaveLength(1);
    } finally {
      forgejo.mode = 'up';
    }
  });

  test('a deleted issue (404) does not keep the task open', async () => {
    const repo = uniqueRepo();
    forgejo.mode = 'gone';
    try {
      const { body, headers } = forgejoRequest(issueAssigned(repo, 6, ['gone']), SECRET);
      await app.inject({ method: 'POST', url: '/api/v1/webhooks/forgejo', headers, payload: body });
      const got = await dequeue(app, GONE, 10);
      const taskId = got.json().task_id as string;
      await app.inject({ method: 'POST', url: taskUrl(taskId, 'complete'), headers: GONE.auth, payload: { agent_id: 'gone-1', attempt: 1, summary: 'ok' } });
      expect((await h.tasks.result(taskId)).state).toBe('completed');
    } finally {
      forgejo.mode = 'up';
    }
  });
});

describe('concurrency and failures', () => {
  test('eight agents on two API processes dequeue one task: exactly one 200', async () => {
    const other = await h.app();
    const polls = RACERS.map((r, i) => dequeue(i % 2 === 0 ? app : other, r, 5));
    // Let every poll register before the task exists (their waits outlast this).
    await waitFor(async () => ((await waitingOn(app)) + (await waitingOn(other)) === RACERS.length ? true : undefined), 'all racers waiting');
    const taskId = await enqueue(app, { agent_type: 'race', title: 'one task', prompt: 'p' });
    const answers = await Promise.all(polls);
    const winners = answers.filter((a) => a.statusCode === 200);
    expect(winners).toHaveLength(1);
    expect(answers.filter((a) => a.statusCode === 204)).toHaveLength(RACERS.length - 1);
    expect(winners[0]!.json().task_id).toBe(taskId);
    const status = await h.tasks.status(taskId);
    expect(status.attempts).toHaveLength(1);
    expect(status.state).toBe('running');
  });

  test('an agent whose connection drops before the answer is written gives the task back', async () => {
    let clientRequest: import('node:http').ClientRequest | undefined;
    let serverSocket: Socket | undefined;
    const dropping = await h.app({
      afterClaim: async () => {
        // The claim is won; now the agent goes away before it hears of it.
        clientRequest!.destroy();
        if (!serverSocket!.destroyed) await once(serverSocket!, 'close');
      },
    });
    const base = await listen(dropping);
    dropping.server.once('connection', (socket: Socket) => (serverSocket = socket));
    const [first, second] = DROP;
    const errored = new Promise<void>((resolve) => {
      clientRequest = httpRequest(`${base}/api/v1/tasks/dequeue?agent_id=${first!.id}&wait=10`, { headers: first!.auth });
      clientRequest.on('error', () => resolve());
      clientRequest.end();
    });
    await waitFor(() => (serverSocket ? true : undefined), 'the agent connected');
    const taskId = await enqueue(dropping, { agent_type: 'drop', title: 'dropped', prompt: 'p' });
    await errored;
    const released = await waitFor(async () => {
      const status = await h.tasks.status(taskId);
      return status.state === 'pending' && status.attempts.length === 1 ? status : undefined;
    }, 'the task given back');
    expect(released.attempts[0]).toMatchObject({ holder: { id: first!.id }, end: 'released' });
    const next = await dequeue(dropping, second!, 10);
    expect(next.statusCode).toBe(200);
    expect(next.json()).toMatchObject({ task_id: taskId, attempt: 2 });
  });

  test('an agent that hangs up while waiting leaves no waiter behind to take a task', async () => {
    const [first, second] = DROP;
    const base = await listen(await h.app());
    const controller = new AbortController();
    const polling = fetch(`${base}/api/v1/tasks/dequeue?agent_id=${first!.id}&wait=10`, { headers: first!.auth, signal: controller.signal }).catch(() => 'aborted');
    const waiting = async () => Number(/^drover_dequeue_waiting (\d+)$/m.exec(await (await fetch(`${base}/metrics`)).text())?.[1]);
    await waitFor(async () => ((await waiting()) === 1 ? true : undefined), 'the agent waiting');
    controller.abort();
    expect(await polling).toBe('aborted');
    await waitFor(async () => ((await waiting()) === 0 ? true : undefined), 'the waiter gone');
    const taskId = await enqueue(app, { agent_type: 'drop', title: 'after the hang-up', prompt: 'p' });
    const next = await fetch(`${base}/api/v1/tasks/dequeue?agent_id=${second!.id}&wait=10`, { headers: second!.auth });
    expect(next.status).toBe(200);
    expect(await next.json()).toMatchObject({ task_id: taskId, attempt: 1 });
  });

  test('an agent that hangs up before its poll starts waiting never takes a task', async () => {
    const [first, second] = DROP;
    const early = await h.app();
    let client: import('node:http').ClientRequest | undefined;
    early.addHook('preHandler', async (request) => {
      if (!request.url.startsWith('/api/v1/tasks/dequeue') || !request.url.includes(first!.id)) return;
      // Gone before the handler attaches its listeners (as if authentication took a while).
      client!.destroy();
      if (!request.raw.socket.destroyed) await once(request.raw.socket, 'close');
    });
    const base = await listen(early);
    const metric = async (pattern: RegExp) => Number(pattern.exec((await early.inject({ method: 'GET', url: '/metrics' })).body)?.[1] ?? 0);
    await new Promise<void>((resolve) => {
      client = httpRequest(`${base}/api/v1/tasks/dequeue?agent_id=${first!.id}&wait=10`, { headers: first!.auth });
      client.on('error', () => resolve());
      client.end();
    });
    const outcome = await waitFor(async () => {
      if ((await metric(/^drover_dequeue_wait_seconds_count\{outcome="aborted"\} (\d+)$/m)) > 0) return 'ended at once';
      if ((await metric(/^drover_dequeue_waiting (\d+)$/m)) > 0) return 'left waiting for nobody';
      return undefined;
    }, 'the poll of the agent that hung up to be handled');
    expect(outcome).toBe('ended at once');
    const taskId = await enqueue(early, { agent_type: 'drop', title: 'after an early hang-up', prompt: 'p' });
    const next = await dequeue(early, second!, 10);
    expect(next.json()).toMatchObject({ task_id: taskId, attempt: 1 });
  });

  test('restarting the API mid-long-poll loses nothing', async () => {
    const first = await h.app();
    const base = await listen(first);
    const polling = fetch(`${base}/api/v1/tasks/dequeue?agent_id=${RESTART.id}&wait=15`, { headers: RESTART.auth });
    await waitFor(async () => ((await waitingOn(first)) === 1 ? true : undefined), 'the agent waiting');
    await first.close();
    const answer = await polling;
    expect(answer.status).toBe(503);
    expect(((await answer.json()) as { code: string }).code).toBe('shutting_down');

    // While no API runs, a task is made (say, by another API process).
    const { taskId } = await h.tasks.start({ agentType: 'restart', kind: 'custom', repo: '', number: 0, title: 'made during the restart', prompt: 'p' }, { taskId: `custom:restart-${Date.now()}` });
    const second = await h.app();
    const again = await dequeue(second, RESTART, 10);
    expect(again.statusCode).toBe(200);
    expect(again.json()).toMatchObject({ task_id: taskId, attempt: 1 });
    await second.inject({ method: 'POST', url: taskUrl(taskId, 'complete'), headers: RESTART.auth, payload: { agent_id: RESTART.id, attempt: 1, summary: 'ok' } });
    const final = await h.tasks.result(taskId);
    expect(final.state).toBe('completed');
    expect(final.attempts).toHaveLength(1);
  });
});

describe('runtime registration', () => {
  test('register, pull as the new agent, see its presence, remove it', async () => {
    const bad = await app.inject({ method: 'POST', url: '/api/v1/agents', headers: adminAuth, payload: { id: 'late-1', types: ['nope'] } });
    expect(bad.statusCode).toBe(422);
    const clash = await app.inject({ method: 'POST', url: '/api/v1/agents', headers: adminAuth, payload: { id: 'a1', types: ['dev'] } });
    expect(clash.statusCode).toBe(409);
    const noAdmin = await app.inject({ method: 'POST', url: '/api/v1/agents', payload: { id: 'late-1', types: ['reg'] } });
    expect(noAdmin.statusCode).toBe(401);

    const created = await app.inject({ method: 'POST', url: '/api/v1/agents', headers: adminAuth, payload: { id: 'late-1', types: ['reg'], labels: { gpu: 'no' } } });
    expect(created.statusCode).toBe(201);
    const { token } = created.json();
    expect(token).toMatch(/^[A-Za-z0-9_-]{40,}$/);
    const twice = await app.inject({ method: 'POST', url: '/api/v1/agents', headers: adminAuth, payload: { id: 'late-1', types: ['reg'] } });
    expect(twice.statusCode).toBe(409);
    expect(twice.json().code).toBe('agent_exists');

    // Another API process knows it too: the registry lives in Temporal.
    const other = await h.app();
    const late = { id: 'late-1', auth: { authorization: `Bearer ${token}` } };
    const taskId = await enqueue(app, { agent_type: 'reg', title: 'for the newcomer', prompt: 'p' });
    const got = await dequeue(other, late, 10);
    expect(got.statusCode).toBe(200);
    expect(got.json().task_id).toBe(taskId);
    const wrong = await dequeue(other, { id: 'late-1', auth: { authorization: 'Bearer not-the-token-at-all' } }, 0);
    expect(wrong.statusCode).toBe(401);

    await other.close(); // flushes presence to the registry
    const listed = await waitFor(async () => {
      const res = await app.inject({ method: 'GET', url: '/api/v1/agents', headers: adminAuth });
      const entry = (res.json().agents as Array<Record<string, unknown>>).find((a) => a.id === 'late-1');
      return entry?.last_seen && entry.current_task ? entry : undefined;
    }, 'presence of late-1');
    expect(listed).toMatchObject({ source: 'runtime', types: ['reg'], labels: { gpu: 'no' }, online: true, current_task: taskId });
    const configured = (await app.inject({ method: 'GET', url: '/api/v1/agents', headers: adminAuth })).json().agents.find((a: { id: string }) => a.id === 'a1');
    expect(configured).toMatchObject({ source: 'config', types: ['dev'] });

    expect((await app.inject({ method: 'DELETE', url: '/api/v1/agents/a1', headers: adminAuth })).statusCode).toBe(409);
    expect((await app.inject({ method: 'DELETE', url: '/api/v1/agents/late-1', headers: adminAuth })).statusCode).toBe(204);
    expect((await app.inject({ method: 'DELETE', url: '/api/v1/agents/late-1', headers: adminAuth })).statusCode).toBe(404);
    const gone = await dequeue(app, late, 0);
    expect(gone.statusCode).toBe(401);

    // Ids that are names of Object.prototype members are ids like any other.
    expect((await app.inject({ method: 'DELETE', url: '/api/v1/agents/toString', headers: adminAuth })).statusCode).toBe(404);
    const odd = await app.inject({ method: 'POST', url: '/api/v1/agents', headers: adminAuth, payload: { id: 'constructor', types: ['reg'] } });
    expect(odd.statusCode).toBe(201);
    const oddAgent = { id: 'constructor', auth: { authorization: `Bearer ${odd.json().token}` } };
    const third = await h.app();
    expect((await dequeue(third, oddAgent, 0)).statusCode).toBe(204);
    await third.close(); // flushes its presence
    const seen = await waitFor(async () => {
      const res = await app.inject({ method: 'GET', url: '/api/v1/agents', headers: adminAuth });
      const entry = (res.json().agents as Array<Record<string, unknown>>).find((a) => a.id === 'constructor');
      return typeof entry?.last_seen === 'string' ? entry : undefined;
    }, 'presence of constructor');
    expect(seen).toMatchObject({ source: 'runtime', online: true });
    expect(ADMIN).toBeTruthy();
  });
});
