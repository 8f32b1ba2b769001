// SSH hosts end to end: real sshd instances, the real task workflow on the dev server, host
// workers with health checks and presence, and the HTTP API for logs and hosts.
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { NativeConnection } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { afterAll, afterEach, beforeAll, describe, expect, it, inject } from 'vitest';
import type { HostConfig } from '../src/config';
import { listHosts } from '../src/host-presence';
import { createLogger } from '../src/log';
import type { TaskInput, TaskOptions, TaskStatus } from '../src/model';
import { findEarlierSession } from '../src/sessions';
import { SshConnection } from '../src/ssh/connection';
import { sshTarget, startSshHosts, type RunningSshHosts } from '../src/workers/ssh-hosts';
import { adminAuth, agent, startHarness, taskUrl, type Harness } from './support/http';
import { SshdFleet } from './support/sshd';
import { alive } from './support/process';
import { TcpProxy } from './support/tcp-proxy';
import { loggedText, readEvents } from './support/sse';
import { runDirectory, runKey } from '../src/run/detached';
import { uniqueRepo, uniqueType, waitFor } from './support/temporal';

const FAKE = join(import.meta.dirname, 'fixtures', 'fake-claude.mjs');
const T = {
  match: uniqueType('match'),
  other: uniqueType('other'),
  loadA: uniqueType('loada'),
  loadB: uniqueType('loadb'),
  failover: uniqueType('failover'),
  partition: uniqueType('partition'),
  offline: uniqueType('offline'),
  assign: uniqueType('assign'),
  cancel: uniqueType('cancel'),
  timeout: uniqueType('timeout'),
  logs: uniqueType('logs'),
  health: uniqueType('health'),
  impostor: uniqueType('impostor'),
  resume: uniqueType('resume'),
};
const puller = agent('puller-1', [T.offline]);

let fleet: SshdFleet;
let h: Harness;
let app: FastifyInstance;
const running: RunningSshHosts[] = [];

beforeAll(async () => {
  fleet = await SshdFleet.start(4, 'sshd');
  h = await startHarness({ types: ['dev', 'reviewer', 'boss', ...Object.values(T)], agents: [puller.config], hosts: [hostConfig('sshd-4', 'watched', [T.health])] });
  await h.startWorker([]);
  app = await h.app();
});
afterEach(async () => {
  while (running.length) await running.pop()!.shutdown();
});
afterAll(async () => {
  while (running.length) await running.pop()!.shutdown();
  await h?.close();
  await fleet?.stop();
});

let listeningAt: string | undefined;
async function listening(): Promise<string> {
  listeningAt ??= await app.listen({ host: '127.0.0.1', port: 0 });
  return listeningAt;
}

function hostConfig(sshd: string, id: string, types: string[], options: { slots?: number; args?: string[] } = {}): HostConfig {
  const workdir = fleet.host(sshd).workdir;
  const command = [process.execPath, FAKE, '--record', workdir, ...(options.args ?? [])];
  return fleet.hostConfig(sshd, {
    id,
    types,
    slots: options.slots ?? 1,
    agents: Object.fromEntries(types.map((t) => [t, { provider: 'claude-code' as const, command }])),
  });
}

async function startHosts(hosts: HostConfig[]): Promise<RunningSshHosts> {
  const address = inject('temporalAddress');
  const started = await startSshHosts({
    hosts,
    client: h.client,
    connect: () => NativeConnection.connect({ address }),
    namespace: h.namespace,
    log: createLogger(process.env.DROVER_TEST_LOG ?? 'silent'),
    presence: { sampleIntervalMs: 100, keepaliveMs: 2_000 },
  });
  running.push(started);
  return started;
}

let numbers = 0;
function input(agentType: string, options: Partial<TaskOptions> = {}, extra: Partial<TaskInput> = {}): TaskInput {
  numbers += 1;
  return { agentType, kind: 'implement', repo: uniqueRepo(), number: numbers, title: `task ${numbers}`, prompt: `prompt ${numbers}`, options: { matchWindowMs: 60_000, ...options }, ...extra };
}

async function statusWhen(taskId: string, ok: (s: TaskStatus) => boolean, what: string, timeoutMs = 30_000): Promise<TaskStatus> {
  return waitFor(async () => {
    const s = await h.tasks.status(taskId);
    return ok(s) ? s : undefined;
  }, `${taskId}: ${what}`, timeoutMs);
}

/** The fake agent's record of a run, from whichever host ran it. */
function record(taskId: string, attempt: number): { pid: number; env: Record<string, string>; argv: string[]; startedNs: string; startedAt: number; sshd: string } | undefined {
  for (const host of fleet.hosts) {
    const path = join(host.workdir, `${taskId}.${attempt}.json`);
    if (existsSync(path)) return { ...JSON.parse(readFileSync(path, 'utf8')), sshd: host.id };
  }
  return undefined;
}

function releaseTask(taskId: string): void {
  for (const host of fleet.hosts) writeFileSync(join(host.workdir, `${taskId}.release`), '');
}


async function aliveOnHost(sshd: string, pid: number): Promise<boolean> {
  const connection = await SshConnection.connect(sshTarget(hostConfig(sshd, 'probe', [T.cancel])));
  try {
    return (await connection.run(`kill -0 ${pid} 2>/dev/null && echo alive || echo gone`, 5_000)).stdout.trim() === 'alive';
  } finally {
    connection.end();
  }
}

describe('SSH hosts', () => {
  it('a task runs on a host that serves its type: the typed queue is the match', async () => {
    await startHosts([hostConfig('sshd-1', 'match-a', [T.other]), hostConfig('sshd-2', 'match-b', [T.match])]);
    const { taskId } = await h.tasks.start(input(T.match));
    const status = await h.tasks.result(taskId);
    expect(status.state).toBe('completed');
    expect(status.mode).toBe('ssh_cli');
    expect(status.attempts.map((a) => a.holder)).toEqual([{ kind: 'host', id: 'match-b' }]);
    expect(status.result).toMatchObject({ outcome: 'success', details: { provider: 'claude-code', costUsd: 0.0123 } });
    expect(status.attempts[0]!.logTail).toContain('"type":"result"');
    expect(record(taskId, 1)).toMatchObject({ sshd: 'sshd-2', env: { DROVER_INSTANCE: 'match-b', DROVER_AGENT_TYPE: T.match } });
  });

  it('a host never runs more tasks than its slots, across all its types, under load', async () => {
    await startHosts([hostConfig('sshd-1', 'loaded', [T.loadA, T.loadB], { slots: 2, args: ['--sleep-ms', '400'] })]);
    const started = await Promise.all(Array.from({ length: 8 }, (_, i) => h.tasks.start(input(i % 2 ? T.loadA : T.loadB))));
    const results = await Promise.all(started.map((s) => h.tasks.result(s.taskId)));
    expect(results.map((r) => r.state)).toEqual(Array(8).fill('completed'));
    // Intervals measured by the agents themselves on the host (monotonic clock).
    const intervals = started.map(({ taskId }) => {
      const rec = record(taskId, 1)!;
      const end = BigInt(readFileSync(join(fleet.host('sshd-1').workdir, `${taskId}.1.end`), 'utf8'));
      return { start: BigInt(rec.startedNs), end };
    });
    const events = intervals.flatMap((i) => [{ at: i.start, d: 1 }, { at: i.end, d: -1 }]).sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : a.d - b.d));
    let now = 0;
    let max = 0;
    for (const e of events) max = Math.max(max, (now += e.d));
    expect(max).toBeLessThanOrEqual(2);
    expect(max).toBeGreaterThanOrEqual(1);
  });

  it('a host unreachable mid-run: its run stops itself, and only then is the task dispatched again and completed on another host', async () => {
    await startHosts([
      hostConfig('sshd-2', 'fail-x', [T.failover], { args: ['--hold'] }),
      hostConfig('sshd-3', 'fail-y', [T.failover], { args: ['--hold'] }),
    ]);
    const { taskId } = await h.tasks.start(input(T.failover, { fenceGraceMs: 8_000 }));
    const first = await waitFor(() => record(taskId, 1), 'the first attempt to start');
    // Its sshd dies; the agent, detached, lives on, held by no one.
    await fleet.kill(first.sshd);
    try {
      const second = await waitFor(() => record(taskId, 2), 'the second attempt to start', 50_000);
      expect(second.sshd).not.toBe(first.sshd);
      // The first run stopped itself before the second began: the two never overlapped.
      expect(alive(first.pid)).toBe(false);
      expect(readFileSync(join(runDirectory(fleet.host(first.sshd).workdir, runKey(taskId, (await h.tasks.status(taskId)).runId, 1)), 'fenced'), 'utf8')).toMatch(/no worker held the run/);
      releaseTask(taskId);
      const status = await h.tasks.result(taskId);
      expect(status.state).toBe('completed');
      expect(status.attempts).toHaveLength(2);
      expect(status.attempts[0]).toMatchObject({ end: 'lost', holder: { id: first.env.DROVER_INSTANCE } });
      expect(status.attempts[0]!.reason).toMatch(/unreachable|stopped itself|not held/);
      expect(status.attempts[1]).toMatchObject({ end: 'completed', holder: { id: second.env.DROVER_INSTANCE } });
    } finally {
      await fleet.startHost(fleet.host(first.sshd));
    }
  });

  it('a worker partitioned from its host (a proxy that goes silent): the run stops itself before the task runs elsewhere', async () => {
    const sshd = fleet.host('sshd-2');
    const proxy = await TcpProxy.start({ host: sshd.address, port: sshd.port });
    try {
      await startHosts([{ ...hostConfig('sshd-2', 'part-x', [T.partition], { args: ['--hold'] }), address: '127.0.0.1', port: proxy.port }]);
      const { taskId } = await h.tasks.start(input(T.partition, { fenceGraceMs: 8_000 }));
      const first = await waitFor(() => record(taskId, 1), 'the first attempt to start');
      proxy.pause(); // no reset, no close: silence both ways
      await startHosts([hostConfig('sshd-3', 'part-y', [T.partition], { args: ['--hold'] })]);
      const second = await waitFor(() => record(taskId, 2), 'the second attempt to start', 50_000);
      expect(second.sshd).toBe('sshd-3');
      expect(alive(first.pid)).toBe(false); // stopped by its watchdog before the second began
      expect(Number(second.startedAt)).toBeGreaterThan(Number(first.startedAt));
      const { runId } = await h.tasks.status(taskId);
      expect(readFileSync(join(runDirectory(sshd.workdir, runKey(taskId, runId, 1)), 'fenced'), 'utf8')).toMatch(/no worker held the run/);
      releaseTask(taskId);
      const status = await h.tasks.result(taskId);
      expect(status).toMatchObject({ state: 'completed', lostAttempts: 1 });
      expect(status.attempts.map((a) => [a.holder.id, a.end])).toEqual([
        ['part-x', 'lost'],
        ['part-y', 'completed'],
      ]);
    } finally {
      proxy.resume();
      await proxy.close();
    }
  });

  it('with every host offline the task falls back to HTTP pull after the window', async () => {
    await fleet.kill('sshd-3');
    try {
      await startHosts([hostConfig('sshd-3', 'offline-z', [T.offline])]);
      await waitFor(async () => (await listHosts(h.client)).find((x) => x.id === 'offline-z' && !x.online && x.reason), 'the host to be reported offline');
      const { taskId } = await h.tasks.start(input(T.offline, { matchWindowMs: 1_500 }));
      await statusWhen(taskId, (s) => s.mode === 'http_pull', 'phase 2');
      // Over a real connection, as a pull agent would.
      const base = await listening();
      const res = await fetch(`${base}/api/v1/tasks/dequeue?agent_id=${puller.id}&wait=10`, { headers: puller.auth });
      expect(res.status).toBe(200);
      expect(await res.json()).toMatchObject({ task_id: taskId, attempt: 1 });
      const done = await fetch(`${base}${taskUrl(taskId, 'complete')}`, {
        method: 'POST',
        headers: { ...puller.auth, 'content-type': 'application/json' },
        body: JSON.stringify({ agent_id: puller.id, attempt: 1, summary: 'pulled' }),
      });
      expect(done.status, await done.clone().text()).toBe(200);
      const status = await h.tasks.result(taskId);
      expect(status.attempts.map((a) => a.holder)).toEqual([{ kind: 'agent', id: puller.id }]);
      expect(record(taskId, 1)).toBeUndefined();
    } finally {
      await fleet.startHost(fleet.host('sshd-3'));
    }
  });

  it('a task assigned to a busy host waits for its slot there', async () => {
    await startHosts([hostConfig('sshd-1', 'busy', [T.assign], { args: ['--hold'] })]);
    const first = await h.tasks.start(input(T.assign));
    await waitFor(() => record(first.taskId, 1), 'the first task to run');
    const second = await h.tasks.start(input(T.assign));
    await h.tasks.assign(second.taskId, { kind: 'host', id: 'busy', types: [T.assign] });
    const waiting = await h.tasks.status(second.taskId);
    expect(waiting).toMatchObject({ state: 'pending', reservedFor: { kind: 'host', id: 'busy' } });
    releaseTask(first.taskId);
    await waitFor(() => record(second.taskId, 1), 'the assigned task to run on its host');
    releaseTask(second.taskId);
    const status = await h.tasks.result(second.taskId);
    expect(status.state).toBe('completed');
    expect(status.attempts.map((a) => a.holder)).toEqual([{ kind: 'host', id: 'busy' }]);
    expect((await h.tasks.result(first.taskId)).state).toBe('completed');
  });

  it('cancel kills the remote process (checked on the host)', async () => {
    await startHosts([hostConfig('sshd-2', 'canceller', [T.cancel], { args: ['--hold'] })]);
    const { taskId } = await h.tasks.start(input(T.cancel));
    const rec = await waitFor(() => record(taskId, 1), 'the agent to start');
    expect(await aliveOnHost(rec.sshd, rec.pid)).toBe(true);
    await h.tasks.cancel(taskId, 'test');
    const status = await h.tasks.result(taskId);
    expect(status.state).toBe('cancelled');
    await waitFor(async () => ((await aliveOnHost(rec.sshd, rec.pid)) ? undefined : true), 'the agent to be gone from the host');
  });

  it('a run that outlives its run timeout is stopped on the host, and the task fails: no retry', async () => {
    await startHosts([hostConfig('sshd-3', 'slowpoke', [T.timeout], { args: ['--hold'] })]);
    const { taskId } = await h.tasks.start(input(T.timeout, { runTimeoutMs: 4_000, maxAttempts: 3 }));
    const rec = await waitFor(() => record(taskId, 1), 'the agent to start');
    const status = await h.tasks.result(taskId);
    expect(status).toMatchObject({ state: 'failed', lostAttempts: 0, result: { outcome: 'fail', summary: expect.stringContaining('run timeout of 4 s reached') } });
    expect(status.attempts).toHaveLength(1);
    expect(status.attempts[0]).toMatchObject({ end: 'timed_out', holder: { id: 'slowpoke' } });
    await waitFor(async () => ((await aliveOnHost(rec.sshd, rec.pid)) ? undefined : true), 'the agent to be gone from the host');
  });

  it('logs are served live while the agent runs, and the kept tail afterwards', async () => {
    await startHosts([hostConfig('sshd-1', 'chatty', [T.logs], { args: ['--lines', '20', '--hold'] })]);
    const { taskId } = await h.tasks.start(input(T.logs));
    await waitFor(() => record(taskId, 1), 'the agent to start');
    const live = await waitFor(async () => {
      const res = await app.inject({ method: 'GET', url: taskUrl(taskId, 'logs'), headers: adminAuth });
      const body = res.json();
      return res.statusCode === 200 && body.source === 'live' && body.log.includes('holding') ? body : undefined;
    }, 'the live log');
    expect(live).toMatchObject({ task_id: taskId, state: 'running', attempt: 1 });
    expect(live.log).toContain('line 19 of');
    expect(live.log_chars).toBeGreaterThan(0);
    expect(typeof live.progress).toBe('string');
    // A follower (SSE) gets the output as heartbeats bring it, then the rest with the attempt's end.
    const following = fetch(`${await listening()}${taskUrl(taskId, 'logs')}/follow`, { headers: adminAuth }).then((res) => readEvents(res));
    await new Promise((r) => setTimeout(r, 1_500));
    releaseTask(taskId);
    await h.tasks.result(taskId);
    const events = await following;
    const followed = loggedText(events);
    expect(followed.match(/"line 19 of/g)).toHaveLength(1);
    expect(followed.match(/"type":"result"/g)).toHaveLength(1);
    expect(events.at(-1)).toEqual({ event: 'end', data: { state: 'completed' } });
    const final = await app.inject({ method: 'GET', url: taskUrl(taskId, 'logs'), headers: adminAuth });
    expect(final.json()).toMatchObject({ source: 'final', state: 'completed' });
    expect(final.json().log).toContain('"type":"result"');
    const text = await app.inject({ method: 'GET', url: `${taskUrl(taskId, 'logs')}?format=text`, headers: adminAuth });
    expect(text.headers['content-type']).toMatch(/^text\/plain/);
    expect(text.body).toContain('"type":"result"');
    const unknown = await app.inject({ method: 'GET', url: taskUrl('implement:nobody:x:1', 'logs'), headers: adminAuth });
    expect(unknown.statusCode).toBe(404);
  });

  it('a host that fails its health check goes offline, and comes back', async () => {
    await startHosts([hostConfig('sshd-4', 'watched', [T.health])]);
    const hostView = async () => (await app.inject({ method: 'GET', url: '/api/v1/hosts', headers: adminAuth })).json().hosts.find((x: { id: string }) => x.id === 'watched');
    await waitFor(async () => ((await hostView())?.online === true ? true : undefined), 'the host online');
    expect(await hostView()).toMatchObject({ online: true, slots: 1, slots_used: 0, types: [T.health] });
    await fleet.kill('sshd-4');
    await waitFor(async () => ((await hostView())?.online === false ? true : undefined), 'the host offline');
    const offline = (await listHosts(h.client)).find((x) => x.id === 'watched');
    expect(offline?.reason).toBeTruthy();
    await fleet.startHost(fleet.host('sshd-4'));
    await waitFor(async () => ((await hostView())?.online === true ? true : undefined), 'the host online again');
    // …and takes tasks again.
    const { taskId } = await h.tasks.start(input(T.health));
    expect((await h.tasks.result(taskId)).state).toBe('completed');
  });

  it('a host whose key is not the pinned one stays offline, with the reason, and takes no task', async () => {
    // sshd-1 answers, but the config pins sshd-2's key: as if sshd-1 were an impostor.
    const impostor = { ...hostConfig('sshd-1', 'impostor', [T.impostor]), hostKey: fleet.host('sshd-2').hostKey };
    await startHosts([impostor]);
    const view = await waitFor(async () => (await listHosts(h.client)).find((x) => x.id === 'impostor' && x.reason?.includes('not the pinned one')), 'the refusal to be reported');
    expect(view.online).toBe(false);
    expect(view.reason).toMatch(/host key of host impostor .* is not the pinned one: it presented SHA256:/);
    const { taskId } = await h.tasks.start(input(T.impostor, { matchWindowMs: 1_000 }));
    await statusWhen(taskId, (s) => s.mode === 'http_pull', 'phase 2');
    expect(record(taskId, 1)).toBeUndefined();
    await h.tasks.cancel(taskId);
  });

  it('a task whose session key ran before resumes that session on the same host', async () => {
    await startHosts([hostConfig('sshd-2', 'sessions', [T.resume])]);
    const sessionKey = `acme/web#${numbers + 1}:${T.resume}`;
    const first = await h.tasks.start(input(T.resume, {}, { sessionKey }));
    const firstStatus = await h.tasks.result(first.taskId);
    const sessionId = firstStatus.result?.details?.sessionId as string;
    expect(sessionId).toMatch(/^[0-9a-f-]{36}$/);
    await waitFor(() => findEarlierSession(h.client, { ...firstStatus.input }), 'the finished task to be visible');
    const second = await h.tasks.start(input(T.resume, {}, { sessionKey, kind: 'address_review' }));
    await h.tasks.result(second.taskId);
    const rec = record(second.taskId, 1)!;
    expect(rec.argv.slice(-2)).toEqual(['--resume', sessionId]);
    expect(rec.env.DROVER_RESUME_SESSION_ID).toBe(sessionId);
    const third = await h.tasks.start(input(T.resume, {}, { sessionKey: `${sessionKey}-other` }));
    await h.tasks.result(third.taskId);
    expect(record(third.taskId, 1)!.argv).not.toContain('--resume');
    // Records are per run; no stray files of other attempts.
    expect(readdirSync(fleet.host('sshd-2').workdir).filter((f) => f.startsWith(second.taskId))).toHaveLength(2);
  });
});
