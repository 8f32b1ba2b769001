// A host's worker process killed mid-run and never back: its attempt stops heartbeating, no worker
// of the host takes the run back within the fence grace, so the attempt is lost, and the task is
// dispatched again and completed elsewhere.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, inject, test } from 'vitest';
import { RecordingRunner } from './support/runners';
import { connectTestTemporal, type TestTemporal, uniqueRepo, uniqueType, waitFor } from './support/temporal';

let t: TestTemporal;
beforeAll(async () => {
  t = await connectTestTemporal();
  await t.startTaskWorker();
});
afterAll(async () => t?.close());

test('kill -9 of a host worker mid-run, never back: the fence grace passes, attempt lost, completed on another host', async () => {
  const type = uniqueType();
  const marker = join(mkdtempSync(join(tmpdir(), 'drover-crash-')), 'running');
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', join(import.meta.dirname, 'fixtures', 'host-process.ts'), inject('temporalAddress'), `h-doomed-${type}`, type, marker],
    { stdio: 'ignore' },
  );
  try {
    const { taskId } = await t.tasks.start({
      agentType: type,
      kind: 'implement',
      repo: uniqueRepo(),
      number: 1,
      title: 'crash',
      prompt: 'p',
      options: { sshHeartbeatTimeoutMs: 2_000, fenceGraceMs: 3_000 },
    });
    await waitFor(() => (existsSync(marker) ? true : undefined), 'the doomed host to start the agent', 60_000);
    expect((await t.tasks.status(taskId)).assignee).toEqual({ kind: 'host', id: `h-doomed-${type}` });
    child.kill('SIGKILL');

    const survivor = new RecordingRunner();
    await t.startHost(`h-survivor-${type}`, [type], 1, survivor);
    const final = await t.tasks.result(taskId);
    expect(final.state).toBe('completed');
    expect(final.attempts[0]).toMatchObject({ attempt: 1, holder: { id: `h-doomed-${type}` }, end: 'lost' });
    expect(final.attempts[0]?.reason).toMatch(/did not take the run back within the fence grace/);
    expect(final.attempts.at(-1)).toMatchObject({ holder: { id: `h-survivor-${type}` }, end: 'completed' });
    expect(survivor.runs.map((r) => r.taskId)).toEqual([taskId]);
  } finally {
    child.kill('SIGKILL');
  }
}, 120_000);
