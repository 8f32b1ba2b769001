// The coordinator's and operators' API over HTTP on the real dev server: enqueue, list and inspect,
// assign and cancel with their refusals, stats, hosts, health, metrics, OpenAPI, admin auth.
import { Client, Connection } from '@temporalio/client';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { ADMIN, adminAuth, agent, dequeue, enqueue, startHarness, taskUrl, testConfig, type Harness } from './support/http';
import { uniqueRepo } from './support/temporal';
import { countingClient } from './support/counting-client';
import { TASK_COUNTS_TTL_MS } from '../src/api/metrics';
import { sumCounts, TASK_TALLY_SHARDS } from '../src/workflows/task-tally-book';
import { taskCountsQuery, taskTallyWorkflowId } from '../src/workflows/task-tally';

const A1 = agent('a1', ['dev']);
const A2 = agent('a2', ['dev']);
const R1 = agent('r1', ['reviewer']);
const M1 = agent('m1', ['metrics']);
const HOST = {
  id: 'h1',
  address: '127.0.0.9',
  user: 'drover',
  privateKeyPath: '/nonexistent/key',
  hostKey: `SHA256:${'A'.repeat(43)}`,
  types: ['dev'],
  slots: 2,
  agents: { dev: { provider: 'command', command: ['true'] } },
};

let h: Harness;
let app: FastifyInstance;

beforeAll(async () => {
  h = await startHarness({
    types: ['dev', 'reviewer', 'boss', 'stats', 'listing', 'metrics'],
    agents: [A1, A2, R1, M1].map((a) => a.config),
    hosts: [HOST],
  });
  await h.startWorker();
  app = await h.app();
});
afterAll(async () => h?.close());

const post = (url: string, payload?: unknown, headers: Record<string, string> = adminAuth) => app.inject({ method: 'POST', url, headers, payload: payload as object });
const get = (url: string, headers: Record<string, string> = adminAuth) => app.inject({ method: 'GET', url, headers });

describe('enqueue, list, inspect', () => {
  test('POST /tasks makes a task (201), the same one again (200); GET /tasks/{id} shows it', async () => {
    const repo = uniqueRepo();
    const made = await post('/api/v1/tasks', { agent_type: 'boss', kind: 'implement', repo, number: 3, title: 'By hand', body: 'Some details' });
    expect(made.statusCode).toBe(201);
    expect(made.json()).toEqual({ task_id: `implement:${repo.replace('/', ':')}:3:boss`, created: true });
    const again = await post('/api/v1/tasks', { agent_type: 'boss', kind: 'implement', repo, number: 3, title: 'By hand' });
    expect(again.statusCode).toBe(200);
    expect(again.json().created).toBe(false);
    const shown = await get(taskUrl(made.json().task_id));
    expect(shown.statusCode).toBe(200);
    expect(shown.json()).toMatchObject({ state: 'pending', mode: 'undecided', agent_type: 'boss', kind: 'implement', repo, number: 3, title: 'By hand', attempt: 0, attempts: [] });
    expect(shown.json().prompt).toContain('Some details'); // the implement template
    const loose = await post('/api/v1/tasks', { agent_type: 'reviewer', title: 'No repository', prompt: 'look around', options: { lease_ms: 5_000 } });
    expect(loose.statusCode).toBe(201);
    expect(loose.json().task_id).toMatch(/^custom:[0-9a-f-]{36}$/);
    expect((await get(taskUrl(loose.json().task_id))).json()).toMatchObject({ kind: 'custom', repo: '', number: 0, prompt: 'look around' });
    expect((await h.tasks.status(loose.json().task_id)).options.leaseMs).toBe(5_000);
  });

  test('refusals: unknown type 422, half a repository reference 400, unknown task 404', async () => {
    const unknownType = await post('/api/v1/tasks', { agent_type: 'ghost', title: 't', prompt: 'p' });
    expect(unknownType.statusCode).toBe(422);
    expect(unknownType.json()).toMatchObject({ code: 'unknown_agent_type', type: 'ghost' });
    const half = await post('/api/v1/tasks', { agent_type: 'dev', repo: 'acme/web', title: 't' });
    expect(half.statusCode).toBe(400);
    // Fastify's own JSON parser (secure-json-parse) refuses prototype poisoning.
    for (const payload of ['{"agent_type":"dev","title":"t","prompt":"p","__proto__":{"polluted":1}}', '{"agent_type":"dev","title":"t","constructor":{"prototype":{"polluted":1}}}']) {
      const poisoned = await app.inject({ method: 'POST', url: '/api/v1/tasks', headers: { ...adminAuth, 'content-type': 'application/json' }, payload });
      expect(poisoned.statusCode, payload).toBe(400);
      expect(poisoned.json().code).toBe('bad_json');
    }
    // GET /tasks/dequeue is the pull agents' long-poll: no task may be called that.
    const shadowed = await post('/api/v1/tasks', { agent_type: 'dev', title: 't', task_id: 'dequeue' });
    expect(shadowed.statusCode).toBe(400);
    expect(shadowed.json().code).toBe('bad_request');
    // A checkout needs a clone URL (workspaces.remoteUrl or forgejo.url: neither here) and git-safe refs.
    const noRemote = await post('/api/v1/tasks', { agent_type: 'dev', kind: 'custom', repo: 'acme/web', number: 1, title: 't', prompt: 'p', checkout: { ref: 'v1.0' } });
    expect(noRemote.statusCode).toBe(400);
    expect(noRemote.json().message).toContain('workspaces.remoteUrl');
    for (const ref of ['--upload-pack=touch /tmp/p', 'a..b', '$(id)']) {
      const unsafe = await post('/api/v1/tasks', { agent_type: 'dev', kind: 'custom', repo: 'acme/web', number: 1, title: 't', prompt: 'p', checkout: { ref } });
      expect(unsafe.statusCode, ref).toBe(400);
    }
    const missing = await get(taskUrl('implement:acme:nothing:1'));
    expect(missing.statusCode).toBe(404);
    expect(missing.json()).toMatchObject({ code: 'task_not_found' });
    // Drover's own entity workflows are no tasks: none can be made, read, cancelled or heartbeated.
    const entity = await post('/api/v1/tasks', { agent_type: 'dev', title: 't', task_id: 'drover-agent-registry' });
    expect(entity.statusCode).toBe(400);
    for (const reply of [
      await get(taskUrl('drover-agent-registry')),
      await post(taskUrl('drover-host-registry', 'cancel'), { reason: 'no' }),
      await post(taskUrl('drover-agent-registry', 'heartbeat'), { agent_id: 'a1', attempt: 1 }, A1.auth),
      await post(taskUrl('drover-agent-registry', 'assign'), { agent_id: 'a1' }),
    ]) {
      expect(reply.statusCode, reply.body).toBe(404);
      expect(reply.json().code).toBe('task_not_found');
    }
  });

  test('GET /tasks filters by state, type, repo and kind, and pages with next_page_token', async () => {
    const repo = uniqueRepo();
    const ids: string[] = [];
    for (let n = 1; n <= 5; n++) ids.push(await enqueue(app, { agent_type: 'listing', kind: 'review', repo, number: n, title: `t${n}`, prompt: 'p' }));
    await enqueue(app, { agent_type: 'listing', kind: 'implement', repo, number: 1, title: 'other kind', prompt: 'p' });
    const seen: string[] = [];
    let token: string | null = null;
    let pages = 0;
    do {
      const res = await get(`/api/v1/tasks?type=listing&kind=review&repo=${repo}&state=pending&page_size=2${token ? `&page_token=${token}` : ''}`);
      expect(res.statusCode).toBe(200);
      const body = res.json();
      expect(body.tasks.length).toBeLessThanOrEqual(2);
      for (const t of body.tasks) {
        expect(t).toMatchObject({ state: 'pending', agent_type: 'listing', kind: 'review', repo });
        seen.push(t.task_id);
      }
      token = body.next_page_token;
      pages++;
    } while (token && pages < 10);
    expect(pages).toBeGreaterThanOrEqual(3);
    expect(seen.sort()).toEqual([...ids].sort());
    const badToken = await get('/api/v1/tasks?page_token=bm90LWEtdG9rZW4.AAAAAAAAAAAAAAAA');
    expect(badToken.statusCode).toBe(400);
    expect(badToken.json().code).toBe('bad_page_token');
    expect((await get('/api/v1/tasks?page_token=bm90LWEtdG9rZW4')).statusCode).toBe(400);
  });
});

describe('assign', () => {
  test('to a pull agent: reserved for it alone, mode http_pull', async () => {
    const taskId = await enqueue(app, { agent_type: 'dev', title: 'for a1 only', prompt: 'p' });
    const keyed = { ...adminAuth, 'idempotency-key': 'first-assign' };
    const res = await post(taskUrl(taskId, 'assign'), { agent_id: 'a1' }, keyed);
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ state: 'pending', mode: 'http_pull', reserved_for: { kind: 'agent', id: 'a1' } });
    const other = await dequeue(app, A2, 0.5);
    expect(other.statusCode).toBe(204);
    const mine = await dequeue(app, A1, 5);
    expect(mine.statusCode).toBe(200);
    expect(mine.json().task_id).toBe(taskId);
    // Now running: assigning again is refused as a bad state.
    const running = await post(taskUrl(taskId, 'assign'), { agent_id: 'a2' });
    expect(running.statusCode).toBe(400);
    expect(running.json().code).toBe('task_not_pending');
    // The first assign sent again with its key (as after a lost answer) is that assign, answered as it was.
    const retried = await post(taskUrl(taskId, 'assign'), { agent_id: 'a1' }, keyed);
    expect(retried.statusCode).toBe(200);
    expect(retried.json()).toEqual(res.json());
    expect((await post(taskUrl(taskId, 'assign'), { agent_id: 'a1' }, { ...adminAuth, 'idempotency-key': 'bad key!' })).statusCode).toBe(400);
    await post(taskUrl(taskId, 'complete'), { agent_id: 'a1', attempt: 1, summary: 'ok' }, A1.auth);
    await h.tasks.result(taskId);
    const closed = await post(taskUrl(taskId, 'assign'), { agent_id: 'a2' });
    expect(closed.statusCode).toBe(400);
    expect(closed.json().code).toBe('task_closed');
  });

  test('to an SSH host: mode ssh_cli', async () => {
    const taskId = await enqueue(app, { agent_type: 'dev', title: 'for h1', prompt: 'p' });
    const res = await post(taskUrl(taskId, 'assign'), { agent_id: 'h1', execution_mode: 'ssh_cli' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ mode: 'ssh_cli', reserved_for: { kind: 'host', id: 'h1' } });
    // A pull agent cannot take a task reserved for a host.
    expect((await dequeue(app, A1, 0.5)).statusCode).toBe(204);
    await post(taskUrl(taskId, 'cancel'), {});
  });

  test('refusals: unknown agent or task 404, contradicting execution_mode 400, wrong type 400', async () => {
    const taskId = await enqueue(app, { agent_type: 'dev', title: 'assign refusals', prompt: 'p' });
    const nobody = await post(taskUrl(taskId, 'assign'), { agent_id: 'nobody' });
    expect(nobody.statusCode).toBe(404);
    expect(nobody.json().code).toBe('agent_not_found');
    for (const name of ['constructor', 'toString', 'hasOwnProperty']) {
      const odd = await post(taskUrl(taskId, 'assign'), { agent_id: name });
      expect(odd.statusCode, name).toBe(404);
      expect(odd.json().code).toBe('agent_not_found');
    }
    const noTask = await post(taskUrl('implement:acme:none:9', 'assign'), { agent_id: 'a1' });
    expect(noTask.statusCode).toBe(404);
    expect(noTask.json().code).toBe('task_not_found');
    const agentAsSsh = await post(taskUrl(taskId, 'assign'), { agent_id: 'a1', execution_mode: 'ssh_cli' });
    expect(agentAsSsh.statusCode).toBe(400);
    expect(agentAsSsh.json().code).toBe('execution_mode_mismatch');
    const hostAsPull = await post(taskUrl(taskId, 'assign'), { agent_id: 'h1', execution_mode: 'http_pull' });
    expect(hostAsPull.statusCode).toBe(400);
    const undecided = await post(taskUrl(taskId, 'assign'), { agent_id: 'a1', execution_mode: 'undecided' });
    expect(undecided.statusCode).toBe(400);
    const wrongType = await post(taskUrl(taskId, 'assign'), { agent_id: 'r1' });
    expect(wrongType.statusCode).toBe(400);
    expect(wrongType.json().code).toBe('wrong_agent_type');
    // None of that changed the task.
    expect((await get(taskUrl(taskId))).json()).toMatchObject({ state: 'pending', mode: 'undecided', reserved_for: null });
    await post(taskUrl(taskId, 'cancel'));
  });
});

describe('cancel', () => {
  test('a pending task closes cancelled, with its reason; cancelling again is answered as the first; a finished task 409; unknown is 404', async () => {
    const taskId = await enqueue(app, { agent_type: 'dev', title: 'to cancel', prompt: 'p' });
    const res = await post(taskUrl(taskId, 'cancel'), { reason: 'not needed' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toMatchObject({ state: 'cancelled', cancel_requested: true, cancel_reason: 'not needed', cancelled_by: 'api' });
    expect((await get(taskUrl(taskId))).json()).toMatchObject({ state: 'cancelled', cancel_reason: 'not needed' });
    // A cancel sent again (its answer lost, say) is the same cancel: the first reason stands.
    const again = await post(taskUrl(taskId, 'cancel'), { reason: 'another reason' });
    expect(again.statusCode).toBe(200);
    expect(again.json()).toEqual(res.json());
    const finished = await enqueue(app, { agent_type: 'dev', title: 'to finish', prompt: 'p' });
    await h.tasks.claim(finished, { kind: 'agent', id: 'a1', types: ['dev'] });
    await post(taskUrl(finished, 'complete'), { agent_id: 'a1', attempt: 1, summary: 'ok' }, A1.auth);
    await h.tasks.result(finished);
    const late = await post(taskUrl(finished, 'cancel'));
    expect(late.statusCode).toBe(409);
    expect(late.json().code).toBe('task_closed');
    expect((await post(taskUrl('implement:acme:none:1', 'cancel'))).statusCode).toBe(404);
  });
});

describe('operators', () => {
  test('stats count tasks by state × type × mode', async () => {
    await enqueue(app, { agent_type: 'stats', title: 's1', prompt: 'p' });
    await enqueue(app, { agent_type: 'stats', title: 's2', prompt: 'p' });
    const done = await enqueue(app, { agent_type: 'stats', title: 's3', prompt: 'p' });
    await post(taskUrl(done, 'cancel'));
    await h.tasks.result(done);
    const stats = await get('/api/v1/stats');
    expect(stats.statusCode).toBe(200);
    const rows = stats.json().tasks.by_state_type_mode.filter((r: { type: string }) => r.type === 'stats');
    expect(rows).toEqual([
      { state: 'cancelled', type: 'stats', mode: 'undecided', count: 1 },
      { state: 'pending', type: 'stats', mode: 'undecided', count: 2 },
    ]);
    expect(stats.json()).toMatchObject({ hosts: { configured: 1, online: 0, slots: 2 }, agents: { configured: 4, runtime: 0 } });
    expect(stats.json().tasks.total).toBeGreaterThanOrEqual(3);
  });

  test('hosts from the config, with presence when the SSH side provides it', async () => {
    const plain = await get('/api/v1/hosts');
    // No worker reports h1 here: the host registry says it is offline.
    expect(plain.json()).toEqual({ hosts: [{ id: 'h1', address: '127.0.0.9', port: 22, types: ['dev'], slots: 2, online: false, slots_used: 0 }] });
    const withPresence = await h.app({ hostPresence: (id) => (id === 'h1' ? { online: true, slotsUsed: 1 } : undefined) });
    const res = await withPresence.inject({ method: 'GET', url: '/api/v1/hosts', headers: adminAuth });
    expect(res.json().hosts[0]).toMatchObject({ online: true, slots_used: 1 });
  });

  test('health, readiness (503 when Temporal is unreachable) and metrics', async () => {
    expect((await get('/healthz', {})).json()).toEqual({ status: 'ok' });
    const ready = await get('/readyz', {});
    expect(ready.statusCode).toBe(200);
    expect(ready.json()).toMatchObject({ status: 'ready', namespace: h.namespace });

    const nowhere = await Connection.connect({ address: '127.0.0.1:9', connectTimeout: 100 }).catch(() => undefined);
    const lazy = nowhere ?? Connection.lazy({ address: '127.0.0.1:9' });
    const unreachable = await h.app({ client: new Client({ connection: lazy, namespace: h.namespace }), config: testConfig(h.namespace) });
    const notReady = await unreachable.inject({ method: 'GET', url: '/readyz' });
    expect(notReady.statusCode).toBe(503);
    expect(notReady.json().code).toBe('temporal_unavailable');

    const taskId = await enqueue(app, { agent_type: 'metrics', title: 'for metrics', prompt: 'p' });
    const got = await dequeue(app, M1, 5);
    expect(got.json().task_id).toBe(taskId);
    await post(taskUrl(taskId, 'complete'), { agent_id: 'm1', attempt: 1, summary: 'ok' }, M1.auth);
    const metrics = (await get('/metrics', {})).body;
    expect(metrics).toMatch(/drover_http_requests_total\{method="POST",route="\/api\/v1\/tasks",status="201"\} \d+/);
    expect(metrics).toMatch(/drover_claims_total\{result="won",code=""\} [1-9]/);
    expect(metrics).toMatch(/drover_dequeue_wait_seconds_count\{outcome="task"\} [1-9]/);
    expect(metrics).toMatch(/drover_tasks\{state="pending"\} [1-9]/);
    expect(metrics).toContain('drover_dequeue_waiting 0');
  });

  test('/metrics counts tasks from the task tallies: once they run, scrapes share one read and make no visibility call', async () => {
    const counting = await countingClient(h.namespace);
    try {
      const scraped = await h.app({ client: counting.client, tasks: counting.tasks });
      const pending = (await h.tasks.start({ agentType: 'metrics', kind: 'custom', repo: uniqueRepo(), number: 0, title: 'counted', prompt: 'p' })).taskId;
      // The stats start any tally not yet running (the only visibility calls); the tallies then follow the tasks.
      expect((await scraped.inject({ method: 'GET', url: '/api/v1/stats', headers: adminAuth })).statusCode).toBe(200);
      await new Promise((r) => setTimeout(r, TASK_COUNTS_TTL_MS)); // past what a scrape keeps
      const visibilityBefore = counting.visibilityCalls();
      const queriesBefore = counting.queries();
      const answers = await Promise.all(Array.from({ length: 20 }, () => scraped.inject({ method: 'GET', url: '/metrics' })));
      // One read for the 20 scrapes: a query to each tally, no visibility call.
      expect(counting.queries() - queriesBefore).toBe(TASK_TALLY_SHARDS);
      expect(counting.visibilityCalls()).toBe(visibilityBefore);
      const tallies = Array.from({ length: TASK_TALLY_SHARDS }, (_, shard) => h.client.workflow.getHandle(taskTallyWorkflowId(shard)));
      const pendingNow = sumCounts(await Promise.all(tallies.map((tally) => tally.query(taskCountsQuery))))
        .filter((row) => row.state === 'pending')
        .reduce((sum, row) => sum + row.count, 0);
      expect(pendingNow).toBeGreaterThan(0);
      for (const answer of answers) expect(answer.body).toContain(`drover_tasks{state="pending"} ${pendingNow}`);
      await h.tasks.cancel(pending);
    } finally {
      await counting.close();
    }
  });

  test('the OpenAPI document lists every endpoint, with a browsable UI', async () => {
    const doc = (await get('/docs/json', {})).json();
    const paths = Object.keys(doc.paths);
    for (const path of [
      '/api/v1/webhooks/forgejo',
      '/api/v1/tasks',
      '/api/v1/tasks/dequeue',
      '/api/v1/tasks/{id}',
      '/api/v1/tasks/{id}/heartbeat',
      '/api/v1/tasks/{id}/complete',
      '/api/v1/tasks/{id}/fail',
      '/api/v1/tasks/{id}/release',
      '/api/v1/tasks/{id}/assign',
      '/api/v1/tasks/{id}/cancel',
      '/api/v1/agents',
      '/api/v1/agents/{id}',
      '/api/v1/agents/{id}/cancel',
      '/api/v1/hosts',
      '/api/v1/stats',
      '/healthz',
      '/readyz',
      '/metrics',
    ]) {
      expect(paths, path).toContain(path);
    }
    expect(doc.components.securitySchemes).toHaveProperty('adminToken');
    const ui = await app.inject({ method: 'GET', url: '/docs/' });
    expect(ui.statusCode).toBe(200);
    expect(ui.headers['content-type']).toContain('text/html');
  });

  test('failed authentication is rate limited per address: then even a right token waits; others and health are untouched', async () => {
    const max = h.config.api.maxAuthFailures;
    const from = (remoteAddress: string, token: string) => app.inject({ method: 'GET', url: '/api/v1/tasks', remoteAddress, headers: { authorization: `Bearer ${token}` } });
    // `max` failures are allowed in the window; the one after them blocks the address.
    for (let i = 0; i <= max; i++) expect((await from('10.9.9.9', 'wrong-token-xyz')).statusCode).toBe(401);
    const refused = await from('10.9.9.9', ADMIN);
    expect(refused.statusCode).toBe(429);
    expect(refused.json()).toMatchObject({ code: 'too_many_auth_failures' });
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    // A bad webhook signature counts as a failure too, and is refused the same way now.
    expect((await app.inject({ method: 'POST', url: '/api/v1/webhooks/forgejo', remoteAddress: '10.9.9.9', payload: {} })).statusCode).toBe(429);
    expect((await from('10.9.9.10', ADMIN)).statusCode).toBe(200);
    expect((await app.inject({ method: 'GET', url: '/healthz', remoteAddress: '10.9.9.9' })).statusCode).toBe(200);
  });

  test('admin endpoints need the admin token', async () => {
    for (const [method, url] of [
      ['GET', '/api/v1/tasks'],
      ['GET', '/api/v1/stats'],
      ['GET', '/api/v1/agents'],
      ['GET', '/api/v1/hosts'],
      ['POST', '/api/v1/tasks'],
      ['POST', taskUrl('implement:a:b:1', 'cancel')],
      ['GET', taskUrl('implement:a:b:1', 'logs')],
      // Before the request is validated: strangers learn nothing from 400s.
      ['GET', `${taskUrl('bad id!', 'logs')}?format=xml`],
      ['POST', '/api/v1/tasks/bad%20id!/assign'],
    ] as const) {
      const none = await app.inject({ method, url });
      expect(none.statusCode, url).toBe(401);
      expect(none.json().code).toBe('unauthorized');
      const wrong = await app.inject({ method, url, headers: { authorization: 'Bearer wrong-token' } });
      expect(wrong.statusCode).toBe(401);
      expect(wrong.json().code).toBe('bad_token');
    }
    const noAdmin = await h.app({ config: { ...h.config, api: { ...h.config.api, adminToken: undefined } } });
    const disabled = await noAdmin.inject({ method: 'GET', url: '/api/v1/stats', headers: adminAuth });
    expect(disabled.statusCode).toBe(403);
    expect(disabled.json().code).toBe('admin_disabled');
  });

  test('more resource plugins register with the same context', async () => {
    const extended = await h.app({
      plugins: [
        async (instance, { ctx }) => {
          instance.get('/api/v1/tasks/:id/extra', { onRequest: ctx.admin }, async () => ({ lines: [], from: ctx.config.temporal.namespace }));
        },
      ],
    });
    const res = await extended.inject({ method: 'GET', url: taskUrl('implement:a:b:1', 'extra'), headers: adminAuth });
    expect(res.json()).toEqual({ lines: [], from: h.namespace });
  });
});
