// Every transition of the task workflow, against the real Temporal dev server.
import type { WorkflowHandle } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { TASKS_QUEUE, typeQueue } from '../src/names';
import { updateIds } from '../src/task-client';
import { type Claimant, MAX_KEPT_ATTEMPTS, type TaskInput, type TaskOptions, type TaskStatus } from '../src/model';
import { TaskError } from '../src/task-errors';
import { createReportActivities } from '../src/activities/report';
import type { Runner } from '../src/activities/runner';
import { cancelUpdate, claimUpdate, statusQuery } from '../src/workflows/messages';
import { NEW_TASK_TALLY_DELAY_MS, type taskWorkflow } from '../src/workflows/task';
import { RecordingRunner, untilAborted } from './support/runners';
import { connectTestTemporal, type TestTemporal, uniqueRepo, uniqueType, waitFor } from './support/temporal';
import { recordedHistories, recordHistory } from './support/histories';

let t: TestTemporal;
beforeAll(async () => {
  t = await connectTestTemporal();
  await t.startTaskWorker();
});
afterAll(async () => t?.close());

let numbers = 0;
function input(agentType: string, options: Partial<TaskOptions> = {}): TaskInput {
  numbers += 1;
  return { agentType, kind: 'implement', repo: uniqueRepo(), number: numbers, title: `task ${numbers}`, prompt: 'do it', options };
}
const agent = (id: string, type: string): Claimant => ({ kind: 'agent', id, types: [type] });
const host = (id: string, type: string): Claimant => ({ kind: 'host', id, types: [type] });

async function statusWhen(taskId: string, ok: (s: TaskStatus) => boolean, what: string): Promise<TaskStatus> {
  return waitFor(async () => {
    const s = await t.tasks.status(taskId);
    return ok(s) ? s : undefined;
  }, `${taskId}: ${what}`);
}

async function rejection(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof TaskError) return error.code;
    throw error;
  }
  throw new Error('expected a rejection');
}

describe('start', () => {
  test('the same task again while open returns the open one', async () => {
    const type = uniqueType();
    const task = input(type, { matchWindowMs: 60_000 });
    const first = await t.tasks.start(task);
    const second = await t.tasks.start(task);
    expect(first).toEqual({ taskId: second.taskId, created: true });
    expect(second.created).toBe(false);
    expect(first.taskId).toBe(`implement:${task.repo.replace('/', ':')}:${task.number}:${task.agentType}`);
    await t.tasks.cancel(first.taskId);
    // Once closed, the same event makes a new task under the same id.
    await t.tasks.result(first.taskId);
    expect((await t.tasks.start(task)).created).toBe(true);
    await t.tasks.cancel(first.taskId);
  });

  test('status of an unknown task is task_not_found', async () => {
    expect(await rejection(t.tasks.status('implement:nobody:nothing:1'))).toBe('task_not_found');
    expect(await rejection(t.tasks.cancel('implement:nobody:nothing:1'))).toBe('task_not_found');
  });

  test('a workflow that is no task is task_not_found: Drover’s own entities, and any other workflow of the namespace', async () => {
    const foreign = `foreign-${uniqueType()}`;
    await t.client.workflow.start('hostRegistryWorkflow', { taskQueue: TASKS_QUEUE, workflowId: foreign, args: [{}] });
    for (const id of [foreign, 'drover-agent-registry', 'drover-host-registry']) {
      expect(await rejection(t.tasks.status(id)), id).toBe('task_not_found');
      expect(await rejection(t.tasks.cancel(id, 'no')), id).toBe('task_not_found');
      expect(await rejection(t.tasks.heartbeat(id, { kind: 'agent', id: 'a1' }, 1)), id).toBe('task_not_found');
      expect(await rejection(t.tasks.assign(id, agent('a1', 'dev'))), id).toBe('task_not_found');
    }
    await t.client.workflow.getHandle(foreign).terminate('test over');
  });
});

describe('Updates retried after a lost answer', () => {
  test('are the same Update: the claim of an SSH attempt, an agent’s complete, a cancel', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    const handle = t.client.workflow.getHandle(taskId);
    // The SSH attempt's claim, as a retried activity would send it again.
    const dispatch = await waitFor(async () => {
      const pending = (await handle.describe()).raw.pendingActivities ?? [];
      return pending.length > 0 ? 1 : undefined;
    }, 'the first SSH attempt');
    const sshClaim = () => handle.executeUpdate(claimUpdate, { args: [{ claimant: host(`h-${type}`, type), dispatch }], updateId: updateIds.sshClaim(`h-${type}`, dispatch) });
    const first = await sshClaim();
    expect(await sshClaim()).toEqual(first);
    expect(await t.tasks.status(taskId)).toMatchObject({ state: 'running', attempt: 1, attempts: [{ attempt: 1 }] });
    // An agent's complete sent twice (a pull task on another id): the second gets the first answer.
    const pull = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    await t.tasks.claim(pull.taskId, agent('a1', type));
    await t.tasks.cancel(pull.taskId, 'first reason', 'test');
    const again = await t.tasks.cancel(pull.taskId, 'second reason', 'test');
    expect(again).toMatchObject({ cancelRequested: true, cancelReason: 'first reason' });
    const result = { outcome: 'success' as const, summary: 'done' };
    const [once, twice] = await Promise.all([
      t.tasks.complete(pull.taskId, { kind: 'agent', id: 'a1' }, 1, result),
      t.tasks.complete(pull.taskId, { kind: 'agent', id: 'a1' }, 1, result),
    ]);
    expect(twice).toEqual(once);
    expect((await t.tasks.result(pull.taskId)).state).toBe('cancelled');
    await t.tasks.cancel(taskId);
  });
});

describe('phase 1: host match', () => {
  test('a host serving the type runs the task on its typed queue', async () => {
    const type = uniqueType();
    const runner = new RecordingRunner(async (ctx) => ({ outcome: 'success', summary: `ran on ${ctx.hostId}`, branch: 'drover/x', rev: 'abc123' }));
    await t.startHost(`h-${type}`, [type], 1, runner);
    const { taskId } = await t.tasks.start(input(type));
    const final = await t.tasks.result(taskId);
    expect(final.state).toBe('completed');
    expect(final.mode).toBe('ssh_cli');
    expect(final.assignee).toEqual({ kind: 'host', id: `h-${type}` });
    expect(final.result).toEqual({ outcome: 'success', summary: `ran on h-${type}`, branch: 'drover/x', rev: 'abc123' });
    expect(final.attempts).toMatchObject([{ attempt: 1, holder: { kind: 'host', id: `h-${type}` }, mode: 'ssh_cli', end: 'completed' }]);
    expect(runner.runs.map((r) => r.taskId)).toEqual([taskId]);
    await recordHistory(t, 'ssh-match', taskId);
    // Since pull offers: the host's claim withdraws the task's offer.
    await recordHistory(t, 'ssh-match-offer-withdrawn', taskId);
  });

  test('a host that serves another type never sees the task', async () => {
    const type = uniqueType();
    const other = new RecordingRunner();
    await t.startHost(`h-other-${type}`, [uniqueType()], 1, other);
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 1_500 }));
    await statusWhen(taskId, (s) => s.mode === 'http_pull', 'http_pull after the window');
    expect(other.runs).toHaveLength(0);
    await t.tasks.cancel(taskId);
  });

  test('a fail result from the agent fails the task', async () => {
    const type = uniqueType();
    await t.startHost(`h-${type}`, [type], 1, new RecordingRunner(async () => ({ outcome: 'fail', summary: 'tests do not pass' })));
    const { taskId } = await t.tasks.start(input(type));
    const final = await t.tasks.result(taskId);
    expect(final.state).toBe('failed');
    expect(final.result).toEqual({ outcome: 'fail', summary: 'tests do not pass' });
  });

  test('a fork result completes the task', async () => {
    const type = uniqueType();
    await t.startHost(`h-${type}`, [type], 1, new RecordingRunner(async () => ({ outcome: 'fork', summary: 'split in two', branch: 'b' })));
    const final = await t.tasks.result((await t.tasks.start(input(type))).taskId);
    expect(final.state).toBe('completed');
    expect(final.result?.outcome).toBe('fork');
  });

  test('a host lost mid-run is a lost attempt: dispatched again and completed by another host', async () => {
    const type = uniqueType();
    const flaky = new RecordingRunner(async () => {
      throw new Error('connection to host dropped');
    });
    const flakyHost = await t.startHost(`h-flaky-${type}`, [type], 1, flaky);
    // The flaky host may claim the next attempt too just as it shuts down: that run then waits on
    // its run queue for the fence grace (a host that went away after a claim), and an attempt its
    // shutdown cut off waits for the heartbeat timeout. Both short here, so the test is quick
    // whichever way the race goes.
    const { taskId } = await t.tasks.start(input(type, { sshHeartbeatTimeoutMs: 5_000, fenceGraceMs: 5_000, maxAttempts: 5 }));
    await waitFor(() => (flaky.runs.length > 0 ? true : undefined), 'the flaky host to run the task');
    await flakyHost.shutdown();
    const good = new RecordingRunner();
    await t.startHost(`h-good-${type}`, [type], 1, good);
    const final = await t.tasks.result(taskId);
    expect(final.state).toBe('completed');
    expect(final.attempts.length).toBeGreaterThanOrEqual(2);
    expect(final.attempts[0]).toMatchObject({ attempt: 1, holder: { id: `h-flaky-${type}` }, end: 'lost', reason: 'connection to host dropped' });
    expect(final.attempts.at(-1)).toMatchObject({ holder: { id: `h-good-${type}` }, end: 'completed' });
    // Attempts the flaky host took before it was gone were lost, or released if they never ran.
    expect(final.attempts.slice(0, -1).every((a) => a.end === 'lost' || a.end === 'released')).toBe(true);
    expect(final.lostAttempts).toBe(final.attempts.filter((a) => a.end === 'lost').length);
    await recordHistory(t, 'host-lost', taskId);
  });

  test('a host that vanishes with the attempt in hand before claiming: the task gets a fresh window on the hosts, not http_pull', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 2_000, sshHeartbeatTimeoutMs: 3_000 }));
    // A real poll that takes the attempt and never answers: a host worker that died with it in hand,
    // or whose poll its own shutdown cut off as the task reached it (then Temporal counts it started).
    const taken = await t.client.connection.withDeadline(Date.now() + 30_000, () =>
      t.client.workflowService.pollActivityTaskQueue({ namespace: t.namespace, taskQueue: { name: typeQueue(type) }, identity: `vanished-${type}` }),
    );
    expect(taken.activityType?.name).toBe('runAttempt');
    const good = new RecordingRunner();
    await t.startHost(`h-good-${type}`, [type], 1, good);
    // The vanished host's heartbeat timeout (3 s) ends after the match window (2 s).
    const settled = await statusWhen(taskId, (s) => s.state !== 'pending' || s.mode === 'http_pull', 'the task run, or given up to http_pull');
    expect(settled.mode).toBe('ssh_cli');
    const final = await t.tasks.result(taskId);
    expect(final).toMatchObject({ state: 'completed', lostAttempts: 0, assignee: { id: `h-good-${type}` } });
    expect(final.attempts).toHaveLength(1);
    expect(good.runs.map((r) => r.taskId)).toEqual([taskId]);
    await recordHistory(t, 'silent-host-fresh-window', taskId);
  });

  test('an attempt heartbeats before its claim: a host slower to get ready than the heartbeat timeout still takes the task', async () => {
    const type = uniqueType();
    const ran: string[] = [];
    const slow: Runner = {
      // Getting ready (the SSH connect) outlasts sshHeartbeatTimeoutMs; the host is alive all along.
      prepare: async () => {
        await new Promise((r) => setTimeout(r, 4_500));
        return {
          run: async (ctx) => {
            ran.push(ctx.taskId);
            return { outcome: 'success', summary: 'slow to connect, but here' };
          },
          close: () => {},
        };
      },
      run: async () => {
        throw new Error('only prepared runs');
      },
    };
    await t.startHost(`h-slow-${type}`, [type], 1, slow);
    const { taskId } = await t.tasks.start(input(type, { sshHeartbeatTimeoutMs: 2_000, matchWindowMs: 15_000 }));
    const settled = await statusWhen(taskId, (s) => s.state !== 'pending' || s.mode === 'http_pull', 'the task run, or given up to http_pull');
    expect(settled.mode).toBe('ssh_cli');
    const final = await t.tasks.result(taskId);
    expect(final).toMatchObject({ state: 'completed', lostAttempts: 0, assignee: { id: `h-slow-${type}` } });
    expect(final.attempts).toHaveLength(1);
    expect(ran).toEqual([taskId]);
  });

  /** A task whose workflow runs on a queue of its own, so that its worker can be stopped and started again. */
  async function taskOnOwnQueue(type: string, options: Partial<TaskOptions>) {
    const queue = `drover.tasks.own-${type}`;
    const startWorkflowWorker = async () => {
      const worker = await Worker.create({
        connection: t.nativeConnection,
        namespace: t.namespace,
        taskQueue: queue,
        workflowBundle: { codePath: inject('workflowBundlePath') },
        activities: createReportActivities(),
      });
      return { worker, running: worker.run() };
    };
    const before = await startWorkflowWorker();
    const taskId = `implement:own-queue:${type}:1`;
    const handle = await t.client.workflow.start<typeof taskWorkflow>('taskWorkflow', {
      taskQueue: queue,
      workflowId: taskId,
      args: [{ taskId, input: input(type, options) }],
    });
    const attemptState = async () => (await handle.describe()).raw.pendingActivities?.find((a) => a.activityType?.name === 'runAttempt')?.state;
    await waitFor(async () => ((await attemptState()) ? true : undefined), 'the SSH attempt scheduled');
    // The workflow worker goes away, with the first SSH attempt on the typed queue.
    before.worker.shutdown();
    await before.running;
    const attemptStarted = () =>
      waitFor(async () => ((await attemptState()) === temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_STARTED ? true : undefined), 'a host to start the attempt');
    return { handle, startWorkflowWorker, attemptStarted };
  }

  /** Waits until the server holds the Update, before any workflow worker has seen it. */
  const claimAdmitted = (workflowId: string, updateId: string) =>
    waitFor(async () => {
      await t.client.workflowService.pollWorkflowExecutionUpdate({
        namespace: t.namespace,
        updateRef: { workflowExecution: { workflowId }, updateId },
        waitPolicy: { lifecycleStage: temporal.api.enums.v1.UpdateWorkflowExecutionLifecycleStage.UPDATE_WORKFLOW_EXECUTION_LIFECYCLE_STAGE_ADMITTED },
      });
      return true;
    }, `the claim ${updateId} admitted`);

  test('a claim that waits out a workflow-worker outage longer than the heartbeat timeout is answered, not lost', async () => {
    const type = uniqueType();
    const { handle, startWorkflowWorker, attemptStarted } = await taskOnOwnQueue(type, { sshHeartbeatTimeoutMs: 2_000, matchWindowMs: 120_000 });
    // A host starts the attempt and asks for the claim; no workflow worker answers for a while.
    const runner = new RecordingRunner();
    await t.startHost(`h-${type}`, [type], 1, runner);
    await attemptStarted();
    await new Promise((r) => setTimeout(r, 4_000)); // twice the heartbeat timeout
    const after = await startWorkflowWorker();
    try {
      const final = await handle.result();
      expect(final).toMatchObject({ state: 'completed', lostAttempts: 0, assignee: { id: `h-${type}` } });
      expect(final.attempts).toHaveLength(1);
      expect(runner.runs).toHaveLength(1);
    } finally {
      after.worker.shutdown();
      await after.running;
    }
  });

  test('a host shuts down while its attempt waits for a claim no workflow worker answers: the wait is cancelled with the attempt', async () => {
    const type = uniqueType();
    const { handle, startWorkflowWorker, attemptStarted } = await taskOnOwnQueue(type, { matchWindowMs: 120_000 });
    const runner = new RecordingRunner();
    const doomed = await t.startHost(`h-${type}`, [type], 1, runner);
    await attemptStarted();
    // Worker shutdown cancels the attempt after its grace time; the claim must not hold the host up.
    let deadline: NodeJS.Timeout | undefined;
    const shutDown = await Promise.race([
      doomed.shutdown().then(() => true),
      new Promise<false>((r) => (deadline = setTimeout(() => r(false), 30_000))),
    ]);
    clearTimeout(deadline);
    expect(shutDown, 'the host shut down').toBe(true);
    const after = await startWorkflowWorker();
    try {
      await handle.terminate('test over');
      expect(runner.runs).toHaveLength(0);
    } finally {
      after.worker.shutdown();
      await after.running;
    }
  });

  test('an attempt that ended before the workflow answered its claim is not a lost attempt: the task is dispatched again', async () => {
    const type = uniqueType();
    const { handle, startWorkflowWorker, attemptStarted } = await taskOnOwnQueue(type, { matchWindowMs: 120_000, maxAttempts: 1 });
    const doomed = await t.startHost(`h-doomed-${type}`, [type], 1, new RecordingRunner());
    await attemptStarted();
    // A started attempt has not necessarily sent its claim yet; without one, its end is only a host that did not take it.
    await claimAdmitted(handle.workflowId, updateIds.sshClaim(`h-doomed-${type}`, 1));
    await doomed.shutdown(); // the attempt ends, its claim still unanswered
    // The workflow sees both at once when it is back: the claim (Updates come first), then the end.
    // (An admitted Update lives in the server's memory until a workflow task takes it: a server
    // that dropped it meanwhile leaves only the end, an attempt that never claimed. Either way
    // nothing ran, and nothing may count as lost.)
    const after = await startWorkflowWorker();
    try {
      const redispatched = async () => (await handle.describe()).raw.pendingActivities?.some((a) => a.activityType?.name === 'runAttempt' && a.state === temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED);
      const requeued = await waitFor(async () => {
        const s = await handle.query(statusQuery);
        if (s.attempts.length > 0) return s.attempts[0]!.end !== 'running' ? s : undefined;
        return (await redispatched()) ? s : undefined;
        // Generous: a host whose report of the attempt's end was lost is known gone only after the heartbeat timeout (30 s).
      }, 'the claim answered and the attempt over', 60_000);
      expect(requeued).toMatchObject({ state: 'pending', lostAttempts: 0 });
      const claimAnswered = requeued.attempts.length > 0;
      if (claimAnswered) expect(requeued.attempts).toMatchObject([{ holder: { id: `h-doomed-${type}` }, end: 'released' }]);
      // Another host runs it; with maxAttempts 1, a lost attempt would have failed the task instead.
      const survivor = new RecordingRunner();
      await t.startHost(`h-survivor-${type}`, [type], 1, survivor);
      expect(await handle.result()).toMatchObject({ state: 'completed', assignee: { id: `h-survivor-${type}` }, lostAttempts: 0 });
      expect(survivor.runs).toHaveLength(1);
      if (claimAnswered) await recordHistory(t, 'claim-after-attempt-end', handle.workflowId);
    } finally {
      after.worker.shutdown();
      await after.running;
    }
  }, 120_000);
});

describe('phase 2: HTTP pull', () => {
  test('the window passes with no host: http_pull, then a pull agent claims and completes', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 300 }));
    const waiting = await statusWhen(taskId, (s) => s.mode === 'http_pull', 'http_pull');
    expect(waiting.state).toBe('pending');
    const grant = await t.tasks.claim(taskId, agent('a1', type));
    expect(grant).toMatchObject({ taskId, attempt: 1 });
    expect(Date.parse(grant.leaseExpiresAt!)).toBeGreaterThan(Date.now());
    const hb = await t.tasks.heartbeat(taskId, { kind: 'agent', id: 'a1' }, 1);
    expect(hb.cancelRequested).toBe(false);
    await t.tasks.complete(taskId, { kind: 'agent', id: 'a1' }, 1, { outcome: 'success', summary: 'merged', rev: 'r1' });
    const final = await t.tasks.result(taskId);
    expect(final).toMatchObject({ state: 'completed', mode: 'http_pull', assignee: { kind: 'agent', id: 'a1' }, result: { summary: 'merged' } });
    await recordHistory(t, 'http-pull', taskId);
  });

  test('an undecided task can be claimed by a pull agent during phase 1; the scheduled SSH attempt loses', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    const grant = await t.tasks.claim(taskId, agent('a1', type));
    expect(grant.attempt).toBe(1);
    // A host that comes online now must not run it: the attempt was cancelled by the claim.
    const late = new RecordingRunner();
    await t.startHost(`h-late-${type}`, [type], 1, late);
    await t.tasks.complete(taskId, { kind: 'agent', id: 'a1' }, 1, { outcome: 'success', summary: 'ok' });
    const final = await t.tasks.result(taskId);
    expect(final.mode).toBe('http_pull');
    expect(late.runs).toHaveLength(0);
    expect(await rejection(t.tasks.claim(taskId, agent('a2', type)))).toBe('task_closed');
  });

  test('a second claim, a wrong type and a non-holder are rejected with their codes', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    expect(await rejection(t.tasks.claim(taskId, agent('a0', 'nobody-serves-this')))).toBe('wrong_agent_type');
    await t.tasks.claim(taskId, agent('a1', type));
    expect(await rejection(t.tasks.claim(taskId, agent('a2', type)))).toBe('task_not_pending');
    expect(await rejection(t.tasks.heartbeat(taskId, { kind: 'agent', id: 'a2' }, 1))).toBe('not_lease_holder');
    expect(await rejection(t.tasks.complete(taskId, { kind: 'agent', id: 'a2' }, 1, { outcome: 'success', summary: 'x' }))).toBe('not_lease_holder');
    await t.tasks.cancel(taskId);
  });

  test('release gives the task back untried: pending again, not counted as lost', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 200 }));
    await t.tasks.claim(taskId, agent('a1', type));
    const released = await t.tasks.release(taskId, { kind: 'agent', id: 'a1' }, 1);
    expect(released).toMatchObject({ state: 'pending', mode: 'undecided', lostAttempts: 0 });
    expect(released.attempts[0]).toMatchObject({ end: 'released' });
    const grant = await t.tasks.claim(taskId, agent('a2', type));
    expect(grant.attempt).toBe(2);
    await t.tasks.complete(taskId, { kind: 'agent', id: 'a2' }, 2, { outcome: 'success', summary: 'ok' });
    expect((await t.tasks.result(taskId)).state).toBe('completed');
  });

  test('a task claimed and given back again and again keeps its latest attempts only: status and continue-as-new stay bounded', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    const me = agent('a-flapping', type);
    const cycles = MAX_KEPT_ATTEMPTS + 5;
    for (let i = 1; i <= cycles; i++) {
      const grant = await t.tasks.claim(taskId, me);
      await t.tasks.release(taskId, me, grant.attempt);
    }
    const status = await t.tasks.status(taskId);
    expect(status).toMatchObject({ state: 'pending', attempt: cycles, lostAttempts: 0, attemptsOmitted: 5 });
    expect(status.attempts).toHaveLength(MAX_KEPT_ATTEMPTS);
    expect(status.attempts[0]?.attempt).toBe(6);
    expect(status.attempts.at(-1)).toMatchObject({ attempt: cycles, end: 'released' });
    await t.tasks.cancel(taskId);
  }, 120_000);
});

describe('assign', () => {
  test('to a host: the task moves to the host queue and runs there, not on another host of the type', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    const assigned = await t.tasks.assign(taskId, host(`h-chosen-${type}`, type));
    expect(assigned).toMatchObject({ state: 'pending', mode: 'ssh_cli', reservedFor: { kind: 'host', id: `h-chosen-${type}` } });
    const bystander = new RecordingRunner();
    await t.startHost(`h-bystander-${type}`, [type], 1, bystander);
    const chosen = new RecordingRunner();
    await t.startHost(`h-chosen-${type}`, [type], 1, chosen);
    const final = await t.tasks.result(taskId);
    expect(final).toMatchObject({ state: 'completed', assignee: { kind: 'host', id: `h-chosen-${type}` } });
    expect(chosen.runs).toHaveLength(1);
    expect(bystander.runs).toHaveLength(0);
    await recordHistory(t, 'assign-host', taskId);
  });

  test('to a host whose attempts keep failing before the claim: dispatched again with backoff, not in a hot loop', async () => {
    const type = uniqueType();
    const hostId = `h-broken-${type}`;
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    await t.tasks.assign(taskId, host(hostId, type));
    let tries = 0;
    await t.startHost(hostId, [type], 1, {
      prepare: async () => {
        tries += 1;
        throw new Error('cannot get ready');
      },
      run: async () => {
        throw new Error('never reached');
      },
    });
    await waitFor(() => (tries >= 4 ? true : undefined), 'four tries on the broken host');
    // Each dispatch after the first retry waits for a timer; no attempt follows another at once.
    const events = (await t.client.workflow.getHandle(taskId).fetchHistory()).events ?? [];
    const hostQueueSchedules = events
      .map((e, index) => ({ e, index }))
      .filter(({ e }) => e.activityTaskScheduledEventAttributes?.taskQueue?.name === `drover.host.${hostId}`)
      .map(({ index }) => index);
    expect(hostQueueSchedules.length).toBeGreaterThanOrEqual(3);
    for (let i = 2; i < hostQueueSchedules.length; i++) {
      const between = events.slice(hostQueueSchedules[i - 1], hostQueueSchedules[i]);
      expect(between.some((e) => e.timerFiredEventAttributes), `a timer before dispatch ${i + 1} to the host`).toBe(true);
    }
    // The task stays reserved for the host, and a cancel during the backoff ends it at once.
    expect(await t.tasks.status(taskId)).toMatchObject({ state: 'pending', reservedFor: { id: hostId }, lostAttempts: 0 });
    await t.tasks.cancel(taskId);
    expect((await t.tasks.result(taskId)).state).toBe('cancelled');
    await recordHistory(t, 'assign-host-backoff', taskId);
  });

  test('declined by hosts that were full is no failure: no backoff, the task waits on the queue for the first free slot', async () => {
    const type = uniqueType();
    const runner = new RecordingRunner((ctx) => untilAborted(ctx.signal));
    const hosts = [1, 2, 3].map((n) => `h${n}-${type}`);
    for (const id of hosts) await t.startHost(id, [type], 1, runner);
    const blockers = [];
    for (let n = 0; n < hosts.length; n++) blockers.push((await t.tasks.start(input(type, { matchWindowMs: 60_000 }))).taskId);
    await waitFor(() => (runner.runs.length === hosts.length ? true : undefined), 'every host busy');
    // A full host still has the poll it opened before it filled: each takes the task and declines it.
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    const history = async () => (await t.client.workflow.getHandle(taskId).fetchHistory()).events ?? [];
    await waitFor(async () => ((await history()).filter((e) => e.activityTaskScheduledEventAttributes).length >= 3 ? true : undefined), 'two declines by full hosts');
    await t.tasks.cancel(blockers[0]!);
    await statusWhen(taskId, (s) => s.state === 'running', 'running on the freed host');
    // No backoff: the one timer is the tally's new-task delay (TALLY_BY_ACTIVITIES_PATCH).
    const timers = (await history()).flatMap((e) => (e.timerStartedEventAttributes ? [e.timerStartedEventAttributes] : []));
    expect(timers.map((timer) => Number(timer.startToFireTimeout?.seconds ?? 0) * 1000)).toEqual([NEW_TASK_TALLY_DELAY_MS]);
    for (const id of [...blockers.slice(1), taskId]) await t.tasks.cancel(id);
  });

  test('hosts whose attempts keep failing before the claim: the task still falls back to http_pull when the window passes', async () => {
    const type = uniqueType();
    await t.startHost(`h-broken-${type}`, [type], 1, {
      prepare: async () => {
        throw new Error('cannot get ready');
      },
      run: async () => {
        throw new Error('never reached');
      },
    });
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 2_500 }));
    const waiting = await statusWhen(taskId, (s) => s.mode === 'http_pull', 'http_pull after the window');
    expect(waiting).toMatchObject({ state: 'pending', attempt: 0, lostAttempts: 0 });
    await t.tasks.cancel(taskId);
  });

  test('to a pull agent: reserved for it alone', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    await t.tasks.assign(taskId, agent('a-chosen', type));
    expect(await rejection(t.tasks.claim(taskId, agent('a-other', type)))).toBe('reserved_for_other');
    const grant = await t.tasks.claim(taskId, agent('a-chosen', type));
    expect(grant.attempt).toBe(1);
    await t.tasks.complete(taskId, { kind: 'agent', id: 'a-chosen' }, 1, { outcome: 'success', summary: 'ok' });
    expect((await t.tasks.result(taskId)).assignee).toEqual({ kind: 'agent', id: 'a-chosen' });
  });

  test('a running or closed task cannot be assigned; an instance of another type neither', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    expect(await rejection(t.tasks.assign(taskId, agent('a-x', 'other-type')))).toBe('wrong_agent_type');
    await t.tasks.claim(taskId, agent('a1', type));
    expect(await rejection(t.tasks.assign(taskId, agent('a2', type)))).toBe('task_not_pending');
    await t.tasks.complete(taskId, { kind: 'agent', id: 'a1' }, 1, { outcome: 'success', summary: 'ok' });
    await t.tasks.result(taskId);
    expect(await rejection(t.tasks.assign(taskId, agent('a2', type)))).toBe('task_closed');
  });
});

describe('leases', () => {
  test('a lapsed lease puts the task back; the stale holder is fenced off; another agent completes', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 100, leaseMs: 800 }));
    await t.tasks.claim(taskId, agent('a-stale', type));
    const requeued = await statusWhen(taskId, (s) => s.state === 'pending' && s.attempts.length === 1, 'lease lapse');
    expect(requeued.attempts[0]).toMatchObject({ holder: { id: 'a-stale' }, end: 'lease_lapsed' });
    expect(requeued.lostAttempts).toBe(1);
    const grant = await t.tasks.claim(taskId, agent('a-fresh', type));
    expect(grant.attempt).toBe(2);
    // The first agent wakes up and tries to finish: rejected, the task is someone else's now.
    expect(await rejection(t.tasks.complete(taskId, { kind: 'agent', id: 'a-stale' }, 1, { outcome: 'success', summary: 'late' }))).toBe('not_lease_holder');
    expect(await rejection(t.tasks.heartbeat(taskId, { kind: 'agent', id: 'a-fresh' }, 1))).toBe('stale_attempt');
    await t.tasks.complete(taskId, { kind: 'agent', id: 'a-fresh' }, 2, { outcome: 'success', summary: 'fresh' });
    const final = await t.tasks.result(taskId);
    expect(final.result?.summary).toBe('fresh');
    await recordHistory(t, 'lease-lapse', taskId);
  });

  test('after max attempts lost, the task fails', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 50, leaseMs: 300, maxAttempts: 2 }));
    await t.tasks.claim(taskId, agent('a1', type));
    await statusWhen(taskId, (s) => s.state === 'pending' && s.lostAttempts === 1, 'first lapse');
    await t.tasks.claim(taskId, agent('a2', type));
    const final = await t.tasks.result(taskId);
    expect(final.state).toBe('failed');
    expect(final.lostAttempts).toBe(2);
    expect(final.result?.summary).toMatch(/gave up after 2 lost attempts/);
  });

  test('heartbeats keep the lease; a long-held task continues-as-new and loses nothing', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 50, leaseMs: 30_000, maxHistoryEvents: 40 }));
    const firstRun = (await t.client.workflow.getHandle(taskId).describe()).runId;
    const grant = await t.tasks.claim(taskId, agent('a1', type));
    for (let i = 0; i < 30; i++) {
      const hb = await t.tasks.heartbeat(taskId, { kind: 'agent', id: 'a1' }, grant.attempt);
      expect(hb.cancelRequested).toBe(false);
      await new Promise((r) => setTimeout(r, 100));
    }
    const status = await t.tasks.status(taskId);
    expect(status).toMatchObject({ state: 'running', mode: 'http_pull', assignee: { id: 'a1' }, attempt: 1, lostAttempts: 0 });
    // The Web UI still shows what the task is: its one-line summary survives continue-as-new.
    const handle = t.client.workflow.getHandle(taskId);
    const described = await handle.describe();
    expect(described.runId).not.toBe(firstRun);
    const metadata = await handle.query<{ currentDetails?: string }>('__temporal_workflow_metadata');
    const shown = `${(await described.staticSummary()) ?? ''}\n${metadata.currentDetails ?? ''}`;
    expect(shown).toContain(`implement ${status.input.repo}#${status.input.number} for ${type}: ${status.input.title}`);
    expect(shown).toContain('**running** (http_pull)');
    await t.tasks.complete(taskId, { kind: 'agent', id: 'a1' }, 1, { outcome: 'success', summary: 'after many heartbeats' });
    const final = await t.tasks.result(taskId);
    expect(final.result?.summary).toBe('after many heartbeats');
    const lastRun = (await t.client.workflow.getHandle(taskId).describe()).runId;
    expect(lastRun).not.toBe(firstRun);
  });
});

describe('cancel', () => {
  test('pending (phase 1, an SSH attempt scheduled)', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    const answer = await t.tasks.cancel(taskId, 'not needed');
    expect(answer.state).toBe('cancelled');
    expect((await t.tasks.result(taskId)).state).toBe('cancelled');
    const late = new RecordingRunner();
    await t.startHost(`h-late-${type}`, [type], 1, late);
    expect(await rejection(t.tasks.claim(taskId, agent('a1', type)))).toBe('task_closed');
    expect(late.runs).toHaveLength(0);
    // Sent again, the cancel is the same Update: answered as the first, with the first reason.
    expect(await t.tasks.cancel(taskId, 'another reason')).toMatchObject({ state: 'cancelled', cancelReason: 'not needed' });
  });

  test('pending in phase 2', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 100 }));
    await statusWhen(taskId, (s) => s.mode === 'http_pull', 'http_pull');
    await t.tasks.cancel(taskId);
    expect((await t.tasks.result(taskId)).state).toBe('cancelled');
  });

  test('running on a pull agent: the next heartbeat says so, and the task ends cancelled', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    await t.tasks.claim(taskId, agent('a1', type));
    const answer = await t.tasks.cancel(taskId);
    expect(answer).toMatchObject({ state: 'running', cancelRequested: true });
    const hb = await t.tasks.heartbeat(taskId, { kind: 'agent', id: 'a1' }, 1);
    expect(hb.cancelRequested).toBe(true);
    await t.tasks.fail(taskId, { kind: 'agent', id: 'a1' }, 1, 'stopped on cancel');
    const final = await t.tasks.result(taskId);
    expect(final.state).toBe('cancelled');
    expect(final.attempts[0]?.end).toBe('failed');
    await recordHistory(t, 'cancel-pull', taskId);
  });

  test('running on a pull agent that keeps heartbeating and never stops: cancelled when the grace ends', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000, leaseMs: 60_000, cancelGraceMs: 1_500 }));
    await t.tasks.claim(taskId, agent('a1', type));
    let heartbeats = 0;
    let refusal: string | undefined;
    const beating = setInterval(() => {
      t.tasks.heartbeat(taskId, { kind: 'agent', id: 'a1' }, 1).then(
        () => void (heartbeats += 1),
        (error: unknown) => void (refusal ??= error instanceof TaskError ? error.code : String(error)),
      );
    }, 200);
    try {
      await t.tasks.cancel(taskId, 'stop now', 'test');
      const final = await t.tasks.result(taskId);
      expect(final).toMatchObject({ state: 'cancelled', lostAttempts: 0, cancelReason: 'stop now', cancelledBy: 'test', attempts: [{ end: 'lease_lapsed' }] });
      expect(Date.parse(final.closedAt!) - Date.parse(final.cancelRequestedAt!)).toBeGreaterThanOrEqual(1_500);
      await waitFor(() => refusal, 'a heartbeat refused once the task is closed');
      expect(heartbeats).toBeGreaterThan(0);
      expect(refusal).toBe('task_closed');
    } finally {
      clearInterval(beating);
    }
    await recordHistory(t, 'cancel-pull-grace', taskId);
  });

  test('running on a pull agent past its run timeout: the task fails, heartbeats or not, and is not retried', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000, leaseMs: 60_000, runTimeoutMs: 1_500 }));
    await t.tasks.claim(taskId, agent('a1', type));
    const hb = await t.tasks.heartbeat(taskId, { kind: 'agent', id: 'a1' }, 1);
    expect(Date.parse(hb.leaseExpiresAt)).toBeLessThanOrEqual(Date.parse((await t.tasks.status(taskId)).runDeadlineAt!));
    const final = await t.tasks.result(taskId);
    expect(final).toMatchObject({ state: 'failed', lostAttempts: 0, attempts: [{ end: 'timed_out' }], result: { outcome: 'fail' } });
    expect(final.attempts).toHaveLength(1);
    await recordHistory(t, 'pull-run-timeout', taskId);
  });

  test('running on a pull agent that never comes back: cancelled when its lease lapses, not retried', async () => {
    const type = uniqueType();
    const { taskId } = await t.tasks.start(input(type, { matchWindowMs: 60_000, leaseMs: 500 }));
    await t.tasks.claim(taskId, agent('a1', type));
    await t.tasks.cancel(taskId);
    const final = await t.tasks.result(taskId);
    expect(final).toMatchObject({ state: 'cancelled', lostAttempts: 0 });
  });

  test('running on an SSH host: the runner is aborted, then the task is cancelled', async () => {
    const type = uniqueType();
    const runner = new RecordingRunner((ctx) => untilAborted(ctx.signal));
    await t.startHost(`h-${type}`, [type], 1, runner);
    const { taskId } = await t.tasks.start(input(type));
    await waitFor(() => (runner.runs.length > 0 ? true : undefined), 'the runner started'); // running is claimed, not yet started
    await t.tasks.cancel(taskId, 'changed my mind');
    const final = await t.tasks.result(taskId);
    expect(final.state).toBe('cancelled');
    expect(final.attempts[0]?.end).toBe('cancelled');
    expect(runner.aborted).toEqual([taskId]);
    await recordHistory(t, 'cancel-ssh', taskId);
  });

  test('requested through Temporal (the Web UI, the CLI): the same cancel, reported and visible in the search attributes', async () => {
    const type = uniqueType();
    const pending = await t.tasks.start(input(type, { matchWindowMs: 60_000 }));
    await t.client.workflow.getHandle(pending.taskId).cancel();
    expect(await t.tasks.result(pending.taskId)).toMatchObject({ state: 'cancelled', cancelRequested: true });

    const runner = new RecordingRunner((ctx) => untilAborted(ctx.signal));
    await t.startHost(`h-${type}`, [type], 1, runner);
    const running = await t.tasks.start(input(type));
    await waitFor(() => (runner.runs.length > 0 ? true : undefined), 'the runner started');
    await t.client.workflow.getHandle(running.taskId).cancel();
    const final = await t.tasks.result(running.taskId);
    expect(final).toMatchObject({ state: 'cancelled', attempts: [{ end: 'cancelled' }] });
    expect(runner.aborted).toEqual([running.taskId]);

    for (const taskId of [pending.taskId, running.taskId]) {
      await waitFor(async () => ((await t.tasks.list({ agentType: type, state: 'cancelled' })).some((row) => row.taskId === taskId) ? true : undefined), `${taskId} listed as cancelled`);
    }
  });

  test('requested through Temporal while a closed task waits for a report that keeps failing: the run ends without it', async () => {
    // An operator's way out of a report that cannot be delivered (e.g. an unreachable callback URL).
    await withReportingTask('stuck-report', async () => {
      throw new Error('callback unreachable');
    }, async ({ handle }) => {
      await handle.executeUpdate(cancelUpdate, { args: [{ reason: 'not needed' }] });
      await waitFor(async () => ((await handle.describe()).raw.pendingActivities?.some((a) => (a.attempt ?? 0) > 1) ? true : undefined), 'the report retried');
      expect((await handle.describe()).status.name).toBe('RUNNING');
      await handle.cancel();
      let deadline: NodeJS.Timeout | undefined;
      const final = await Promise.race([handle.result(), new Promise<undefined>((r) => (deadline = setTimeout(() => r(undefined), 30_000)))]);
      clearTimeout(deadline);
      expect(final).toMatchObject({ state: 'cancelled' });
    });
  });
});

/**
 * Runs `body` with a task on a workflow worker of its own, whose reports go to `reportTaskEvent`
 * (the shared worker's reports go nowhere a test can see).
 */
async function withReportingTask(
  name: string,
  reportTaskEvent: (event: { type: string }) => Promise<void>,
  body: (task: { taskId: string; type: string; handle: WorkflowHandle<typeof taskWorkflow> }) => Promise<void>,
): Promise<void> {
  const type = uniqueType();
  const queue = `drover.tasks.${name}-${type}`;
  const worker = await Worker.create({
    connection: t.nativeConnection,
    namespace: t.namespace,
    taskQueue: queue,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    activities: { ...createReportActivities(), reportTaskEvent },
  });
  const running = worker.run();
  try {
    const taskId = `implement:${name}:${type}:1`;
    const handle = await t.client.workflow.start<typeof taskWorkflow>('taskWorkflow', {
      taskQueue: queue,
      workflowId: taskId,
      args: [{ taskId, input: input(type, { matchWindowMs: 60_000 }) }],
    });
    await body({ taskId, type, handle });
  } finally {
    worker.shutdown();
    await running;
  }
}

describe('reports', () => {
  test('go out in the order of their events: a slow `started` is not overtaken by the closing one', async () => {
    const delivered: string[] = [];
    const report = async (event: { type: string }) => {
      if (event.type === 'started') await new Promise((r) => setTimeout(r, 2_000)); // Forgejo slow to answer
      delivered.push(event.type);
    };
    await withReportingTask('ordered-reports', report, async ({ taskId, type, handle }) => {
      const grant = await t.tasks.claim(taskId, agent('a-ordered', type));
      await t.tasks.complete(taskId, { kind: 'agent', id: 'a-ordered' }, grant.attempt, { outcome: 'success', summary: 'quick' });
      await handle.result();
      expect(delivered).toEqual(['started', 'succeeded']);
    });
  });
});

describe('search attributes', () => {
  test('state, mode, type, assignee, repo, number and kind are visible to list queries', async () => {
    const type = uniqueType();
    const task = input(type, { matchWindowMs: 60_000 });
    const { taskId } = await t.tasks.start(task);
    await t.tasks.claim(taskId, agent('a-listed', type));
    const found = await waitFor(async () => {
      const rows = await t.tasks.list({ agentType: type, state: 'running' });
      return rows.length === 1 && rows[0]!.assignee === 'a-listed' ? rows[0] : undefined;
    }, 'the running task in visibility');
    expect(found).toMatchObject({ taskId, state: 'running', mode: 'http_pull', agentType: type, repo: task.repo, number: task.number, kind: 'implement' });
    await t.tasks.cancel(taskId);
  });
});

describe('replay', () => {
  test('histories of the main paths replay deterministically against the current workflow code', async () => {
    const { Worker } = await import('@temporalio/worker');
    const { inject } = await import('vitest');
    const names = recordedHistories.map((h) => h.name);
    expect(names).toEqual(expect.arrayContaining(['ssh-match', 'host-lost', 'http-pull', 'assign-host', 'lease-lapse', 'cancel-pull', 'cancel-ssh']));
    for (const { name, workflowId, history } of recordedHistories) {
      await expect(
        Worker.runReplayHistory({ workflowBundle: { codePath: inject('workflowBundlePath') } }, history, workflowId),
        name,
      ).resolves.toBeUndefined();
    }
  });
});
