// A Drover deploy mid-run: the real `drover worker` (in a process of its own) drives an agent on
// a real sshd host, and is killed (kill -9) or stopped (SIGTERM) while the agent runs, then
// started again. The agent runs detached from the SSH channel, so it lives on; the new worker
// attaches to the same run through the retried activity of the same attempt: no second agent, no
// lost attempt, and the log goes on where it was.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, expect, inject, test } from 'vitest';
import type { TaskStatus } from '../src/model';
import { startHarness, type Harness } from './support/http';
import { SshdFleet } from './support/sshd';
import { alive } from './support/process';
import { recordHistory } from './support/histories';
import { uniqueRepo, uniqueType, waitFor } from './support/temporal';

const FAKE = join(import.meta.dirname, 'fixtures', 'fake-claude.mjs');
const CLI = join(import.meta.dirname, '..', 'src', 'cli.ts');
const TYPE = uniqueType('deploy');

let fleet: SshdFleet;
let h: Harness;
let configPath: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  fleet = await SshdFleet.start(1, 'deploy');
  h = await startHarness({ types: ['dev', 'reviewer', 'boss', TYPE] });
  await h.startWorker([]);
  const workdir = fleet.host('deploy-1').workdir;
  const host = fleet.hostConfig('deploy-1', {
    id: 'deployed',
    types: [TYPE],
    agents: { [TYPE]: { provider: 'claude-code', command: [process.execPath, FAKE, '--record', workdir, '--lines', '3', '--hold'] } },
  });
  configPath = join(workdir, 'drover.json');
  writeFileSync(configPath, JSON.stringify({ temporal: { address: inject('temporalAddress'), namespace: h.namespace }, types: ['dev', 'reviewer', 'boss', TYPE], hosts: [host], log: { level: 'error' } }));
});
afterEach(async () => {
  for (const child of children.splice(0)) {
    child.kill('SIGKILL');
    await exited(child);
  }
});
afterAll(async () => {
  await h?.close();
  await fleet?.stop();
});

/** `drover worker` with the test config, as a deploy would start it. */
function startWorker(): ChildProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', CLI, 'worker', '--config', configPath], { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(child);
  return child;
}

function exited(child: ChildProcess): Promise<void> {
  return child.exitCode !== null || child.signalCode !== null ? Promise.resolve() : new Promise((r) => child.once('exit', () => r()));
}

function record(taskId: string, attempt: number): { pid: number } | undefined {
  const path = join(fleet.host('deploy-1').workdir, `${taskId}.${attempt}.json`);
  return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : undefined;
}


let numbers = 0;
async function deployMidRun(stop: (worker: ChildProcess) => void, golden?: string): Promise<{ final: TaskStatus; pid: number }> {
  numbers += 1;
  const first = startWorker();
  const { taskId } = await h.tasks.start({
    agentType: TYPE,
    kind: 'implement',
    repo: uniqueRepo(),
    number: numbers,
    title: 'a long run',
    prompt: 'work for a while',
    options: { matchWindowMs: 120_000, sshHeartbeatTimeoutMs: 5_000, fenceGraceMs: 45_000 },
  });
  const started = await waitFor(() => record(taskId, 1), 'the agent to start', 90_000);
  stop(first);
  await exited(first);
  // The worker is gone; the agent is not.
  expect(alive(started.pid)).toBe(true);
  startWorker();
  // The next try of the same attempt attaches (on the host's own queue) to the same run.
  await waitFor(async () => {
    const described = await h.client.workflow.getHandle(taskId).describe();
    const run = (described.raw.pendingActivities ?? []).find((a) => a.activityType?.name === 'runClaimed');
    return run && (run.attempt ?? 1) > 1 && run.lastStartedTime ? true : undefined;
  }, 'the new worker to attach', 90_000);
  writeFileSync(join(fleet.host('deploy-1').workdir, `${taskId}.release`), '');
  const final = await h.tasks.result(taskId);
  expect(record(taskId, 2)).toBeUndefined(); // no second agent
  if (golden) await recordHistory(h, golden, taskId);
  return { final, pid: started.pid };
}

test('kill -9 of the worker mid-run, then started again: the same run completes, one attempt, the log whole', async () => {
  const { final, pid } = await deployMidRun((worker) => worker.kill('SIGKILL'), 'ssh-reattach');
  expect(final).toMatchObject({ state: 'completed', lostAttempts: 0, result: { outcome: 'success' } });
  expect(final.attempts).toHaveLength(1);
  // Output from before the kill and after the new worker attached, each once.
  const log = final.attempts[0]!.logTail ?? '';
  expect(log.match(/"line 0 of /g)).toHaveLength(1);
  expect(log.match(/"line 2 of /g)).toHaveLength(1);
  expect(log).toContain('"type":"result"');
  expect(alive(pid)).toBe(false);
}, 240_000);

test('SIGTERM (a deploy): the worker stops without waiting for the run and leaves the agent alone; the next worker attaches', async () => {
  // deployMidRun waits for the stopped worker to exit while the agent holds (until released).
  const { final } = await deployMidRun((worker) => worker.kill('SIGTERM'));
  expect(final).toMatchObject({ state: 'completed', lostAttempts: 0 });
  expect(final.attempts).toHaveLength(1);
}, 240_000);

test('a restarted worker counts the runs under way against its slots before it takes new work', async () => {
  const first = startWorker();
  const task = (title: string, number: number) =>
    h.tasks.start({
      agentType: TYPE,
      kind: 'implement',
      repo: uniqueRepo(),
      number,
      title,
      prompt: 'p',
      // A late re-attach (the heartbeat timeout passes first): a worker that did not count the run
      // would have the slot free, and take the next task, well before then.
      options: { matchWindowMs: 120_000, sshHeartbeatTimeoutMs: 20_000, fenceGraceMs: 60_000 },
    });
  const running = await task('under way', 901);
  const started = await waitFor(() => record(running.taskId, 1), 'the first agent to start', 90_000);
  first.kill('SIGKILL');
  await exited(first);
  const waiting = await task('waits for the slot', 902);
  startWorker();
  await waitFor(async () => {
    const described = await h.client.workflow.getHandle(running.taskId).describe();
    const run = (described.raw.pendingActivities ?? []).find((a) => a.activityType?.name === 'runClaimed');
    return run && (run.attempt ?? 1) > 1 && run.lastStartedTime ? true : undefined;
  }, 'the new worker to attach', 120_000);
  // The host (one slot) was full all along: the waiting task did not start beside the run.
  expect(record(waiting.taskId, 1)).toBeUndefined();
  expect((await h.tasks.status(waiting.taskId)).state).toBe('pending');
  writeFileSync(join(fleet.host('deploy-1').workdir, `${running.taskId}.release`), '');
  expect((await h.tasks.result(running.taskId)).state).toBe('completed');
  expect(alive(started.pid)).toBe(false);
  await waitFor(() => record(waiting.taskId, 1), 'the waiting task to start once the slot is free', 60_000);
  writeFileSync(join(fleet.host('deploy-1').workdir, `${waiting.taskId}.release`), '');
  expect((await h.tasks.result(waiting.taskId)).state).toBe('completed');
}, 300_000);
