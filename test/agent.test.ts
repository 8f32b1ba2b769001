// `drover agent` end to end: real agent processes (the CLI) against the real API app and task
// workflow, running the fake Claude Code locally.
import { spawnDroverAgent, type AgentProcess } from './support/drover-agent';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TaskInput, TaskOptions, TaskStatus } from '../src/model';
import { adminAuth, agent, startHarness, type Harness } from './support/http';
import { loggedText, readEvents } from './support/sse';
import { HOSTILE_STRINGS } from './support/hostile';
import { uniqueRepo, uniqueType, waitFor } from './support/temporal';
import { alive } from './support/process';
import { TcpProxy } from './support/tcp-proxy';

const FAKE = join(import.meta.dirname, 'fixtures', 'fake-claude.mjs');
const TYPE = uniqueType('pull');
const agents = ['pa-1', 'pa-2', 'pa-3', 'pa-4', 'pa-5', 'pa-6', 'pa-7'].map((id) => agent(id, [TYPE]));
const [A, B, C, D, E, F, G] = agents;

let h: Harness;
let app: FastifyInstance;
let base: string;
let port: number;
const dir = mkdtempSync(join(tmpdir(), 'drover-agent-'));
const children: AgentProcess[] = [];

beforeAll(async () => {
  h = await startHarness({ types: ['dev', 'reviewer', 'boss', TYPE], agents: agents.map((a) => a.config) });
  await h.startWorker([]);
  app = await h.app();
  base = await app.listen({ host: '127.0.0.1', port: 0 });
  port = Number(new URL(base).port);
});
afterAll(async () => {
  for (const child of children) child.process.kill('SIGKILL');
  await h?.close();
  rmSync(dir, { recursive: true, force: true });
});

function startAgent(who: ReturnType<typeof agent>, agentArgs: string[] = [], fakeArgs: string[] = [], server = base): AgentProcess {
  const handle = spawnDroverAgent(
    ['--server', server, '--agent-id', who.id, '--wait', '2', '--kill-grace', '1s', '--workdir', dir, '--provider', 'claude-code', ...agentArgs, '--', process.execPath, FAKE, '--record', dir, ...fakeArgs],
    { DROVER_AGENT_TOKEN: who.token },
  );
  children.push(handle);
  return handle;
}

let numbers = 0;
function input(options: Partial<TaskOptions> = {}, extra: Partial<TaskInput> = {}): TaskInput {
  numbers += 1;
  return { agentType: TYPE, kind: 'implement', repo: uniqueRepo(), number: numbers, title: `task ${numbers}`, prompt: `prompt ${numbers}`, options: { matchWindowMs: 60_000, leaseMs: 10_000, ...options }, ...extra };
}

function record(taskId: string, attempt: number): { pid: number; env: Record<string, string>; prompt: string; argv: string[] } | undefined {
  const path = join(dir, `${taskId}.${attempt}.json`);
  return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : undefined;
}


async function statusWhen(taskId: string, ok: (s: TaskStatus) => boolean, what: string): Promise<TaskStatus> {
  return waitFor(async () => {
    const s = await h.tasks.status(taskId);
    return ok(s) ? s : undefined;
  }, `${taskId}: ${what}`, 45_000);
}

async function stopAgent(child: AgentProcess): Promise<void> {
  child.process.kill('SIGTERM');
  await child.exited;
}

describe('drover agent', () => {
  it('dequeues a task, runs the command with the prompt on stdin, and completes it with the provider’s result', async () => {
    const agentA = startAgent(A!);
    try {
      const pwned = join(dir, 'pwned');
      const prompt = HOSTILE_STRINGS(pwned).join('\n');
      const { taskId } = await h.tasks.start(input({}, { prompt, sessionKey: `acme/x#1:${TYPE}` }));
      const status = await h.tasks.result(taskId);
      expect(status.state, agentA.output.join('')).toBe('completed');
      expect(status.mode).toBe('http_pull');
      expect(status.attempts.map((a) => a.holder)).toEqual([{ kind: 'agent', id: A!.id }]);
      expect(status.result).toMatchObject({ outcome: 'success', details: { provider: 'claude-code', costUsd: 0.0123 } });
      const rec = record(taskId, 1)!;
      expect(rec.prompt).toBe(prompt);
      expect(rec.env).toMatchObject({ DROVER_TASK_ID: taskId, DROVER_INSTANCE: A!.id, DROVER_SESSION_KEY: `acme/x#1:${TYPE}` });
      expect(rec.env.DROVER_AGENT_TOKEN).toBeUndefined();
      expect(existsSync(pwned)).toBe(false);

      // The same session key again: the agent resumes its own earlier session.
      await waitFor(async () => ((await h.tasks.list({ agentType: TYPE, state: 'completed' })).some((t) => t.taskId === taskId) ? true : undefined), 'visibility');
      const again = await h.tasks.start(input({}, { sessionKey: `acme/x#1:${TYPE}`, kind: 'address_review' }));
      await h.tasks.result(again.taskId);
      expect(record(again.taskId, 1)!.argv.slice(-2)).toEqual(['--resume', status.result!.details!.sessionId]);
    } finally {
      await stopAgent(agentA);
    }
    expect(await agentA.exited).toBe(0);
  });

  it('cancel stops the command: the agent learns it from its heartbeat', async () => {
    const agentB = startAgent(B!, [], ['--hold']);
    try {
      const { taskId } = await h.tasks.start(input({ leaseMs: 3_000 }));
      const rec = await waitFor(() => record(taskId, 1), 'the command to start', 45_000);
      expect(alive(rec.pid)).toBe(true);
      await h.tasks.cancel(taskId, 'test');
      const status = await h.tasks.result(taskId);
      expect(status.state).toBe('cancelled');
      await waitFor(() => (alive(rec.pid) ? undefined : true), 'the command to be stopped');
    } finally {
      await stopAgent(agentB);
    }
  });

  it('kill -9 of the agent mid-task: the lease lapses and another agent takes the task and completes it', async () => {
    const agentC = startAgent(C!, [], ['--hold']);
    const { taskId } = await h.tasks.start(input({ leaseMs: 2_000 }));
    const first = await waitFor(() => record(taskId, 1), 'the first agent to start the command', 45_000);
    agentC.process.kill('SIGKILL');
    await agentC.exited;
    // Its command does not outlive it: the wrapper's watchdog sees its stdin close.
    await waitFor(() => (alive(first.pid) ? undefined : true), 'the orphaned command to be killed');
    const agentD = startAgent(D!, [], ['--hold']);
    try {
      const second = await waitFor(() => record(taskId, 2), 'the second agent to start the command', 45_000);
      expect(second.env.DROVER_INSTANCE).toBe(D!.id);
      writeFileSync(join(dir, `${taskId}.release`), '');
      const status = await h.tasks.result(taskId);
      expect(status.state).toBe('completed');
      expect(status.attempts).toHaveLength(2);
      expect(status.attempts[0]).toMatchObject({ holder: { kind: 'agent', id: C!.id }, end: 'lease_lapsed' });
      expect(status.attempts[1]).toMatchObject({ holder: { kind: 'agent', id: D!.id }, end: 'completed' });
    } finally {
      await stopAgent(agentD);
    }
  });

  it('SIGTERM gives the running task back when it does not finish within the grace', async () => {
    const agentE = startAgent(E!, ['--shutdown-grace', '500ms'], ['--hold']);
    const { taskId } = await h.tasks.start(input());
    const rec = await waitFor(() => record(taskId, 1), 'the command to start', 45_000);
    agentE.process.kill('SIGTERM');
    expect(await agentE.exited).toBe(0);
    const status = await statusWhen(taskId, (s) => s.state === 'pending', 'given back');
    expect(status.attempts[0]).toMatchObject({ holder: { id: E!.id }, end: 'released' });
    await waitFor(() => (alive(rec.pid) ? undefined : true), 'the command to be stopped');
    await h.tasks.cancel(taskId);
  });

  it('SIGTERM lets a task finish within the grace, then exits', async () => {
    const agentE = startAgent(E!, ['--shutdown-grace', '60s'], ['--sleep-ms', '1500']);
    const { taskId } = await h.tasks.start(input());
    await waitFor(() => record(taskId, 1), 'the command to start', 45_000);
    agentE.process.kill('SIGTERM');
    expect(await agentE.exited).toBe(0);
    const status = await h.tasks.result(taskId);
    expect(status.state).toBe('completed');
    expect(status.attempts.map((a) => a.holder.id)).toEqual([E!.id]);
  });

  it('uploads its command’s output: the task’s live log, followed as it comes (SSE) to the end', async () => {
    const agentA = startAgent(A!, [], ['--lines', '3', '--hold']);
    try {
      const { taskId } = await h.tasks.start(input({ leaseMs: 6_000 }));
      await waitFor(() => record(taskId, 1), 'the command to start', 45_000);
      const live = await waitFor(async () => {
        const res = await fetch(`${base}/api/v1/tasks/${encodeURIComponent(taskId)}/logs`, { headers: adminAuth });
        const body = (await res.json()) as { source: string; log: string; log_chars: number | null };
        return body.source === 'live' && body.log.includes('"line 2 of') ? body : undefined;
      }, 'the uploaded output in the live log');
      expect(live.log_chars).toBeGreaterThanOrEqual(live.log.length);
      const following = fetch(`${base}/api/v1/tasks/${encodeURIComponent(taskId)}/logs/follow`, { headers: adminAuth }).then((res) => {
        expect(res.headers.get('content-type')).toMatch(/^text\/event-stream/);
        return readEvents(res);
      });
      await new Promise((r) => setTimeout(r, 1_500));
      writeFileSync(join(dir, `${taskId}.release`), '');
      const events = await following;
      const text = loggedText(events);
      expect(text.match(/"line 0 of/g)).toHaveLength(1);
      expect(text.match(/"type":"result"/g)).toHaveLength(1); // the rest came with the complete
      expect(events[0]).toEqual({ event: 'state', data: { state: 'running', attempt: 1 } });
      expect(events.at(-1)).toEqual({ event: 'end', data: { state: 'completed' } });
    } finally {
      await stopAgent(agentA);
    }
  });

  it('cut off from the API: stops its command by its own clock before the lease lapses, so that no other run overlaps', async () => {
    const proxy = await TcpProxy.start({ host: '127.0.0.1', port });
    const agentG = startAgent(G!, [], ['--hold'], `http://127.0.0.1:${proxy.port}`);
    try {
      const { taskId } = await h.tasks.start(input({ leaseMs: 8_000 }));
      const started = await waitFor(() => record(taskId, 1), 'the command to start', 45_000);
      proxy.pause(); // a partition: heartbeats go unanswered, nothing says 409
      const deadAt = await waitFor(() => (alive(started.pid) ? undefined : Date.now()), 'the command to stop', 30_000);
      const lapsed = await statusWhen(taskId, (s) => s.attempts[0]?.end === 'lease_lapsed', 'the lease to lapse');
      // The command was gone before the workflow could give the task to anyone else.
      expect(deadAt).toBeLessThan(Date.parse(lapsed.attempts[0]!.endedAt!));
      expect(agentG.output.join('')).toContain('stopping the command before the lease runs out');
      await h.tasks.cancel(taskId);
    } finally {
      proxy.resume();
      await stopAgent(agentG);
      await proxy.close();
    }
  });

  it('rides out a server restart: reports and polls are retried until the server is back', async () => {
    const agentF = startAgent(F!, [], ['--hold']);
    try {
      const { taskId } = await h.tasks.start(input({ leaseMs: 60_000 }));
      await waitFor(() => record(taskId, 1), 'the command to start', 45_000);
      // The API goes away while the command runs; the command finishes while it is away.
      await app.close();
      writeFileSync(join(dir, `${taskId}.release`), '');
      await waitFor(() => (agentF.output.join('').includes('could not report') ? true : undefined), 'a failed report');
      app = await h.app();
      base = await app.listen({ host: '127.0.0.1', port });
      const status = await h.tasks.result(taskId);
      expect(status.state).toBe('completed');
      expect(status.attempts.map((a) => a.holder.id)).toEqual([F!.id]);
      // …and it keeps polling: the next task is taken too.
      const next = await h.tasks.start(input());
      writeFileSync(join(dir, `${next.taskId}.release`), '');
      expect((await h.tasks.result(next.taskId)).attempts.map((a) => a.holder.id)).toEqual([F!.id]);
    } finally {
      await stopAgent(agentF);
    }
  });
});
