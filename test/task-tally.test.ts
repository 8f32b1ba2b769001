// The task tally: task counts by state × type × mode that the task workflows publish themselves,
// so that GET /api/v1/stats needs no visibility call. The book (pure), then the tally through
// Drover on the real dev server: seeding from visibility, counts that follow tasks and match what
// visibility says, and a task that continues-as-new counted once.
import { Writable } from 'node:stream';
import { WorkflowNotFoundError } from '@temporalio/client';
import { defaultPayloadConverter } from '@temporalio/common';
import { temporal } from '@temporalio/proto';
import { MockActivityEnvironment } from '@temporalio/testing';
import { NativeConnection, type Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { buildApp } from '../src/api/app';
import type { Claimant, TaskInput, TaskOptions } from '../src/model';
import { startDevServer } from '../src/dev-server';
import { createReportActivities } from '../src/activities/report';
import { TASKS_QUEUE } from '../src/names';
import { countTasksFromVisibility, TaskTallyReader, TaskTallyTeller } from '../src/task-tally';
import { NEW_TASK_TALLY_DELAY_MS } from '../src/workflows/task';
import { TaskMachine } from '../src/workflows/task-machine';
import { closedNotCounted, newTaskPlace, placeKey, sumCounts, TASK_TALLY_SHARDS, tallyShardOf, TaskTallyBook, taskPlace, type TaskPlace, type TaskTell } from '../src/workflows/task-tally-book';
import { LEGACY_TASK_TALLY_WORKFLOW_ID, TASK_TALLY_WORKFLOW_TYPE, taskCountsQuery, taskTallyWorkflowId, taskTransitionSignal, type taskTallyWorkflow } from '../src/workflows/task-tally';
import { createTaskWorker } from '../src/workers/task-worker';
import { countingClient } from './support/counting-client';
import { recordHistory } from './support/histories';
import { adminAuth, enqueue, startHarness, testConfig, type Harness } from './support/http';
import { uniqueRepo, uniqueType, waitFor } from './support/temporal';

const at = (state: string, type = 'dev', mode = 'undecided'): TaskPlace => ({ state, type, mode });

describe('the task tally book (pure)', () => {
  it("a new task's place, as the API tells it, is where its workflow starts it", () => {
    const machine = TaskMachine.create('t1', input('reviewer'), 0, 'run-1');
    expect(placeKey(taskPlace(machine.status))).toBe(placeKey(newTaskPlace('reviewer')));
  });

  it('counts a task where it is now: new, moved, closed; a repeat changes nothing', () => {
    const book = new TaskTallyBook();
    expect(book.apply({ taskId: 't1', to: at('pending') })).toBe(true);
    expect(book.apply({ taskId: 't2', to: at('pending') })).toBe(true);
    expect(book.apply({ taskId: 't3', to: at('pending', 'reviewer') })).toBe(true);
    expect(book.counts()).toEqual([
      { state: 'pending', type: 'dev', mode: 'undecided', count: 2 },
      { state: 'pending', type: 'reviewer', mode: 'undecided', count: 1 },
    ]);
    expect(book.apply({ taskId: 't1', from: at('pending'), to: at('running', 'dev', 'http_pull') })).toBe(true);
    expect(book.apply({ taskId: 't1', from: at('pending'), to: at('running', 'dev', 'http_pull') })).toBe(false); // a repeat
    expect(book.apply({ taskId: 't1', to: at('completed', 'dev', 'http_pull') })).toBe(true);
    expect(book.apply({ taskId: 't2', to: at('cancelled') })).toBe(true);
    expect(book.counts()).toEqual([
      { state: 'cancelled', type: 'dev', mode: 'undecided', count: 1 },
      { state: 'completed', type: 'dev', mode: 'http_pull', count: 1 },
      { state: 'pending', type: 'reviewer', mode: 'undecided', count: 1 },
    ]);
    expect(book.openTasks).toBe(1);
  });

  it('decrements where it had the task, whatever `from` says: a lost transition is mended by the next, and no count goes below zero', () => {
    const book = new TaskTallyBook();
    book.apply({ taskId: 't1', to: at('pending') });
    // t1's move to running/http_pull was lost (sent in the workflow task that continued-as-new);
    // the next run restates where the task is.
    book.apply({ taskId: 't1', from: at('running', 'dev', 'http_pull'), to: at('pending', 'dev', 'http_pull') });
    expect(book.counts()).toEqual([{ state: 'pending', type: 'dev', mode: 'http_pull', count: 1 }]);
    // A task the book never had: counted where it is, nothing taken from where it says it was.
    book.apply({ taskId: 'unknown', from: at('pending', 'dev', 'http_pull'), to: at('running', 'dev', 'http_pull') });
    expect(book.counts()).toEqual([
      { state: 'pending', type: 'dev', mode: 'http_pull', count: 1 },
      { state: 'running', type: 'dev', mode: 'http_pull', count: 1 },
    ]);
    expect(book.counts().every((row) => row.count > 0)).toBe(true);
  });

  it('a run started by continue-as-new restating the same place counts nothing again', () => {
    const book = new TaskTallyBook();
    book.apply({ taskId: 't1', to: at('pending') });
    book.apply({ taskId: 't1', from: at('pending'), to: at('running', 'dev', 'http_pull') });
    expect(book.apply({ taskId: 't1', to: at('running', 'dev', 'http_pull') })).toBe(false);
    expect(book.counts()).toEqual([{ state: 'running', type: 'dev', mode: 'http_pull', count: 1 }]);
  });

  it("a task's tally shard is FNV-1a of its id (pinned: changing it re-deals the tasks), spread evenly", () => {
    expect(tallyShardOf('a')).toBe(0xe40c292c % TASK_TALLY_SHARDS); // FNV-1a's published value for "a"
    expect(tallyShardOf('implement:acme:web:42:dev')).toBe(3);
    const perShard = new Array<number>(TASK_TALLY_SHARDS).fill(0);
    for (let i = 0; i < 8_000; i++) perShard[tallyShardOf(`review:org-${i % 37}:repo-${i % 101}:${i}:reviewer`)]! += 1;
    for (const n of perShard) expect(n).toBeGreaterThan(800);
  });

  it("shards' counts sum by place; a shard seeded beside running ones takes only the closed tasks they do not count", () => {
    const a = new TaskTallyBook();
    a.apply({ taskId: 't1', to: at('pending') });
    a.apply({ taskId: 't2', to: at('completed', 'dev', 'http_pull') });
    const b = new TaskTallyBook();
    b.apply({ taskId: 't3', to: at('pending') });
    b.apply({ taskId: 't4', to: at('failed', 'boss', 'ssh_cli') });
    expect(sumCounts([a.counts(), b.counts(), []])).toEqual([
      { state: 'failed', type: 'boss', mode: 'ssh_cli', count: 1 },
      { state: 'completed', type: 'dev', mode: 'http_pull', count: 1 },
      { state: 'pending', type: 'dev', mode: 'undecided', count: 2 },
    ]);
    const completed = placeKey(at('completed', 'dev', 'http_pull'));
    const failed = placeKey(at('failed', 'boss', 'ssh_cli'));
    const cancelled = placeKey(at('cancelled'));
    // Visibility counts 5 completed, 1 failed, 2 cancelled; the running shards count 1, 1 and 0 of them.
    expect(closedNotCounted({ [completed]: 5, [failed]: 1, [cancelled]: 2, 'not a key': 4 }, sumCounts([a.counts(), b.counts()]))).toEqual({ [completed]: 4, [cancelled]: 2 });
  });

  it('snapshot and restore (continue-as-new, seeding) keep everything; malformed input is skipped', () => {
    const book = new TaskTallyBook();
    book.apply({ taskId: '__proto__', to: at('pending') });
    book.apply({ taskId: 'constructor', to: at('running', 'boss', 'ssh_cli') });
    book.apply({ taskId: 't3', to: at('failed', 'boss', 'ssh_cli') });
    const restored = new TaskTallyBook(JSON.parse(JSON.stringify(book.snapshot())));
    expect(restored.counts()).toEqual(book.counts());
    expect(restored.counts()).toHaveLength(3);
    restored.apply({ taskId: '__proto__', to: at('completed') });
    expect(restored.counts().find((row) => row.state === 'pending')).toBeUndefined();

    const bad = new TaskTallyBook({ open: { t1: 'not a key', t2: JSON.stringify(['pending', 'dev', 'undecided']) }, closed: { x: 3, [JSON.stringify(['failed', 'dev', 'ssh_cli'])]: -2 } });
    expect(bad.counts()).toEqual([{ state: 'pending', type: 'dev', mode: 'undecided', count: 1 }]);
    for (const malformed of [undefined, {}, { taskId: '' , to: at('pending') }, { taskId: 't9' }, { taskId: 't9', to: { state: 'pending' } }]) {
      expect(bad.apply(malformed as never)).toBe(false);
    }
  });
});

const SHARDS = Array.from({ length: TASK_TALLY_SHARDS }, (_, shard) => shard);
const tallyOf = (h: Harness, shard: number) => h.client.workflow.getHandle(taskTallyWorkflowId(shard));
/** The events of a tally's runs, from `runId` to the current one. */
async function runsFrom(h: Harness, shard: number, runId: string): Promise<Array<{ runId: string; events: temporal.api.history.v1.IHistoryEvent[] }>> {
  const runs: Array<{ runId: string; events: temporal.api.history.v1.IHistoryEvent[] }> = [];
  for (let run: string | undefined = runId; run; ) {
    const events: temporal.api.history.v1.IHistoryEvent[] = (await h.client.workflow.getHandle(taskTallyWorkflowId(shard), run).fetchHistory()).events ?? [];
    runs.push({ runId: run, events });
    run = events.at(-1)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
  }
  return runs;
}
/** Every shard's counts, summed. */
const tallied = async (h: Harness) => sumCounts(await Promise.all(SHARDS.map((shard) => tallyOf(h, shard).query(taskCountsQuery))));

let numbers = 0;
function input(agentType: string, options: Partial<TaskOptions> = {}): TaskInput {
  numbers += 1;
  return { agentType, kind: 'implement', repo: uniqueRepo(), number: numbers, title: `tally ${numbers}`, prompt: 'p', options: { matchWindowMs: 60_000, ...options } };
}
const pullAgent = (id: string, type: string): Claimant => ({ kind: 'agent', id, types: [type] });

type Row = { state: string; type: string; mode: string; count: number };
const plain = (rows: Row[]): Row[] => rows.map(({ state, type, mode, count }) => ({ state, type, mode, count }));
const ofTypes = (rows: Row[], types: string[]) => plain(rows.filter((row) => types.includes(row.type)));

async function statsOf(app: FastifyInstance): Promise<{ total: number; by_state: Record<string, number>; by_state_type_mode: Row[] }> {
  const answer = await app.inject({ method: 'GET', url: '/api/v1/stats', headers: adminAuth });
  expect(answer.statusCode, answer.body).toBe(200);
  return answer.json().tasks;
}

/** What visibility says about tasks of `types`, the expensive way. */
async function visibilityRows(h: Harness, types: string[] = h.config.types): Promise<Row[]> {
  return ofTypes(new TaskTallyBook(await countTasksFromVisibility(h.tasks, types)).counts(), types);
}

describe('the task tally through Drover', () => {
  let h: Harness;
  let app: FastifyInstance;
  let counting: Awaited<ReturnType<typeof countingClient>>;
  beforeAll(async () => {
    h = await startHarness({ types: ['dev', 'reviewer', 'boss'] });
    await h.startWorker();
    counting = await countingClient(h.namespace);
    app = await h.app({ client: counting.client, tasks: counting.tasks });
  });
  afterAll(async () => {
    await h?.close();
    await counting?.close();
  });

  it('a namespace with tasks and no tally: the first readers (two at once) seed one tally from visibility, once; it then follows the tasks', async () => {
    const a1 = pullAgent('seed-a1', 'reviewer');
    const pending = await Promise.all([1, 2, 3].map(() => h.tasks.start(input('dev')).then((s) => s.taskId)));
    const running = (await h.tasks.start(input('reviewer'))).taskId;
    await h.tasks.claim(running, a1);
    const cancelled = (await h.tasks.start(input('dev'))).taskId;
    await h.tasks.cancel(cancelled);
    const completed = (await h.tasks.start(input('reviewer'))).taskId;
    const grant = await h.tasks.claim(completed, a1);
    await h.tasks.complete(completed, { kind: 'agent', id: a1.id }, grant.attempt, { outcome: 'success', summary: 'done' });
    await h.tasks.result(completed);
    await h.tasks.result(cancelled);
    const expected = [
      { state: 'cancelled', type: 'dev', mode: 'undecided', count: 1 },
      { state: 'pending', type: 'dev', mode: 'undecided', count: 3 },
      { state: 'completed', type: 'reviewer', mode: 'http_pull', count: 1 },
      { state: 'running', type: 'reviewer', mode: 'http_pull', count: 1 },
    ];
    // The tasks' tells found no tally; visibility has them all.
    for (const shard of SHARDS) await expect(tallyOf(h, shard).describe()).rejects.toBeInstanceOf(WorkflowNotFoundError);
    await waitFor(async () => (JSON.stringify(await visibilityRows(h)) === JSON.stringify(expected) ? true : undefined), 'visibility to show the tasks');

    const readers = [1, 2].map(() => new TaskTallyReader({ client: h.client, tasks: h.tasks, types: h.config.types }));
    const [first, second] = await Promise.all(readers.map((reader) => reader.read()));
    expect(plain(first!)).toEqual(expected);
    expect(plain(second!)).toEqual(expected);
    // One tally per shard, each seeded once: what they answer is not doubled.
    expect(plain(await tallied(h))).toEqual(expected);
    for (const shard of SHARDS) expect((await tallyOf(h, shard).describe()).status.name).toBe('RUNNING');

    // From now on the tasks' own signals move them.
    await h.tasks.claim(pending[0]!, pullAgent('seed-a2', 'dev'));
    await h.tasks.cancel(pending[1]!);
    await h.tasks.cancel(running);
    await h.tasks.fail(running, { kind: 'agent', id: a1.id }, 1, 'stopped on cancel');
    await h.tasks.result(pending[1]!);
    await h.tasks.result(running);
    const moved = [
      { state: 'cancelled', type: 'dev', mode: 'undecided', count: 2 },
      { state: 'pending', type: 'dev', mode: 'undecided', count: 1 },
      { state: 'running', type: 'dev', mode: 'http_pull', count: 1 },
      { state: 'cancelled', type: 'reviewer', mode: 'http_pull', count: 1 },
      { state: 'completed', type: 'reviewer', mode: 'http_pull', count: 1 },
    ];
    const stats = await waitFor(async () => {
      const tasks = await statsOf(app);
      return JSON.stringify(plain(tasks.by_state_type_mode)) === JSON.stringify(moved) ? tasks : undefined;
    }, 'the stats to follow the tasks');
    expect(stats.by_state).toEqual({ pending: 1, running: 1, completed: 1, failed: 0, cancelled: 3 });
    expect(stats.total).toBe(6);
    await waitFor(async () => (JSON.stringify(await visibilityRows(h)) === JSON.stringify(moved) ? true : undefined), 'visibility to agree');
    await h.tasks.cancel(pending[0]!);
    await h.tasks.fail(pending[0]!, { kind: 'agent', id: 'seed-a2' }, 1, 'stopped on cancel');
    await h.tasks.cancel(pending[2]!);
  });

  it('counts follow tasks enqueued, claimed, completed, failed and cancelled, match visibility, and cost no visibility call', async () => {
    const type = 'boss';
    const holder = (id: string) => ({ kind: 'agent' as const, id });
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push(await enqueue(app, { agent_type: type, kind: 'implement', repo: uniqueRepo(), number: i + 1, title: `b${i}`, prompt: 'p' }));
    const [toComplete, toFail, toCancelRunning, toCancelPending, stayRunning] = ids;
    for (const [taskId, who] of [
      [toComplete, 'b1'],
      [toFail, 'b2'],
      [toCancelRunning, 'b3'],
      [stayRunning, 'b4'],
    ] as const) {
      await h.tasks.claim(taskId!, pullAgent(who, type));
    }
    await h.tasks.complete(toComplete!, holder('b1'), 1, { outcome: 'success', summary: 'ok' });
    await h.tasks.fail(toFail!, holder('b2'), 1, 'broke');
    await h.tasks.cancel(toCancelRunning!);
    await h.tasks.fail(toCancelRunning!, holder('b3'), 1, 'stopped on cancel'); // the agent stops: the task ends cancelled
    await h.tasks.cancel(toCancelPending!);
    for (const taskId of [toComplete, toFail, toCancelRunning, toCancelPending]) await h.tasks.result(taskId!);
    const expected = [
      { state: 'cancelled', type, mode: 'http_pull', count: 1 },
      { state: 'cancelled', type, mode: 'undecided', count: 1 },
      { state: 'completed', type, mode: 'http_pull', count: 1 },
      { state: 'failed', type, mode: 'http_pull', count: 1 },
      { state: 'pending', type, mode: 'undecided', count: 1 },
      { state: 'running', type, mode: 'http_pull', count: 1 },
    ];
    const rows = await waitFor(async () => {
      const got = ofTypes((await statsOf(app)).by_state_type_mode, [type]);
      return JSON.stringify(got) === JSON.stringify(expected) ? got : undefined;
    }, 'the stats to follow the tasks');
    expect(rows).toEqual(expected);
    await waitFor(async () => (JSON.stringify(await visibilityRows(h, [type])) === JSON.stringify(expected) ? true : undefined), 'visibility to agree');

    // Once the tally runs, an answer is one query: no visibility call at all.
    await new Promise((r) => setTimeout(r, 1_100)); // past the shared cache
    const before = counting.visibilityCalls();
    await statsOf(app);
    expect(counting.visibilityCalls() - before).toBe(0);
    await h.tasks.cancel(stayRunning!);
    await h.tasks.cancel(ids[5]!);
  });

  it('the tally hears of a task through activities, of a new one once it has been pending a while: the task workflow sends it no signal', async () => {
    await statsOf(app); // a tally runs
    const type = uniqueType('tally');
    const rows = async () => plain(ofTypes(await tallied(h), [type]));
    const history = async (taskId: string) => (await h.client.workflow.getHandle(taskId).fetchHistory()).events ?? [];
    const told = (events: Awaited<ReturnType<typeof history>>) => events.flatMap((e) => (e.activityTaskScheduledEventAttributes?.activityType?.name === 'tellTaskTally' ? [e] : []));

    // Claimed at once: the tally first hears of it running, then closed.
    const quick = (await h.tasks.start(input(type))).taskId;
    const quickGrant = await h.tasks.claim(quick, pullAgent('told-a1', type));
    await h.tasks.complete(quick, { kind: 'agent', id: 'told-a1' }, quickGrant.attempt, { outcome: 'success', summary: 'done' });
    await h.tasks.result(quick);
    await waitFor(async () => (JSON.stringify(await rows()) === JSON.stringify([{ state: 'completed', type, mode: 'http_pull', count: 1 }]) ? true : undefined), 'the closed task in the tally');
    const quickEvents = await history(quick);
    expect(quickEvents.filter((e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes)).toEqual([]);
    expect(told(quickEvents)).toHaveLength(2); // running, completed: never pending

    // Left pending: told once it has been pending for NEW_TASK_TALLY_DELAY_MS.
    const waiting = (await h.tasks.start(input(type))).taskId;
    await new Promise((r) => setTimeout(r, NEW_TASK_TALLY_DELAY_MS / 2));
    expect(told(await history(waiting))).toHaveLength(0);
    await waitFor(async () => ((await rows()).some((r) => r.state === 'pending') ? true : undefined), 'the pending task in the tally');
    expect(plain(await rows())).toEqual([
      { state: 'completed', type, mode: 'http_pull', count: 1 },
      { state: 'pending', type, mode: 'undecided', count: 1 },
    ]);
    await h.tasks.cancel(waiting);
    await h.tasks.result(waiting);
    await waitFor(async () => ((await rows()).some((r) => r.state === 'cancelled') ? true : undefined), 'the cancelled task in the tally');
    expect(told(await history(waiting))).toHaveLength(2);
  });

  it('a task that continues-as-new is counted once, before and after', async () => {
    const type = uniqueType('tally');
    const { taskId } = await h.tasks.start(input(type, { leaseMs: 30_000, maxHistoryEvents: 40 }));
    const firstRun = (await h.client.workflow.getHandle(taskId).describe()).runId;
    const grant = await h.tasks.claim(taskId, pullAgent('can-a1', type));
    for (let i = 0; i < 30; i++) {
      await h.tasks.heartbeat(taskId, { kind: 'agent', id: 'can-a1' }, grant.attempt);
      await new Promise((r) => setTimeout(r, 50));
    }
    const runs = await waitFor(async () => {
      const { runId } = await h.client.workflow.getHandle(taskId).describe();
      return runId !== firstRun ? runId : undefined;
    }, 'a continue-as-new');
    expect(runs).not.toBe(firstRun);
    // The new run restated where the task is (an activity of its own: no report carries it), a
    // move the tally takes as a repeat.
    await waitFor(async () => {
      const secondRun = await h.client.workflow.getHandle(taskId, runs).fetchHistory();
      return secondRun.events?.some((e) => e.activityTaskScheduledEventAttributes?.activityType?.name === 'tellTaskTally') ? true : undefined;
    }, 'the new run to restate where the task is');
    const running = await waitFor(async () => {
      const rows = ofTypes((await statsOf(app)).by_state_type_mode, [type]);
      return rows.length > 0 ? rows : undefined;
    }, 'the running task in the stats');
    expect(running).toEqual([{ state: 'running', type, mode: 'http_pull', count: 1 }]);
    await h.tasks.complete(taskId, { kind: 'agent', id: 'can-a1' }, grant.attempt, { outcome: 'success', summary: 'after a continue-as-new' });
    await h.tasks.result(taskId);
    const done = await waitFor(async () => {
      const rows = ofTypes((await statsOf(app)).by_state_type_mode, [type]);
      return rows.length === 1 && rows[0]!.state === 'completed' ? rows : undefined;
    }, 'the completed task in the stats');
    expect(done).toEqual([{ state: 'completed', type, mode: 'http_pull', count: 1 }]);
  });

  it('a move the tally lost (the server drops a signal sent in the workflow task that continues-as-new) is mended by the next run', async () => {
    // The drop itself depends on timing (the release and the continue-as-new sharing one workflow
    // task); what it leaves behind does not: a tally whose record of a task is stale. Made here by
    // hand, then the task's next run restates where it is.
    const type = uniqueType('tally');
    const { taskId } = await h.tasks.start(input(type, { leaseMs: 120_000, maxHistoryEvents: 40 }));
    const firstRun = (await h.client.workflow.getHandle(taskId).describe()).runId;
    const grant = await h.tasks.claim(taskId, pullAgent('mend-a1', type));
    const tally = tallyOf(h, tallyShardOf(taskId));
    const placeOf = async () => ofTypes(await tally.query(taskCountsQuery), [type]);
    const running = [{ state: 'running', type, mode: 'http_pull', count: 1 }];
    await waitFor(async () => (JSON.stringify(await placeOf()) === JSON.stringify(running) ? true : undefined), 'the tally to see the task running');
    // The tally's record goes stale: as if the claim's move had never reached it.
    await tally.signal(taskTransitionSignal, [{ taskId, to: { state: 'pending', type, mode: 'undecided' } }]);
    await waitFor(async () => ((await placeOf())[0]?.state === 'pending' ? true : undefined), 'the stale record');
    // Heartbeats fill the history: the task continues-as-new, and its new run restates its place.
    let run = firstRun;
    while (run === firstRun) {
      await h.tasks.heartbeat(taskId, { kind: 'agent', id: 'mend-a1' }, grant.attempt);
      run = (await h.client.workflow.getHandle(taskId).describe()).runId;
    }
    const mended = await waitFor(async () => {
      const rows = await placeOf();
      return rows[0]?.state === 'running' ? rows : undefined;
    }, 'the next run to mend the record');
    expect(mended).toEqual(running);
    await h.tasks.cancel(taskId);
  });

  it('a tally an operator terminated is started again with its share, the other shards left as they are: the sums still match visibility', async () => {
    const type = uniqueType('tally');
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) ids.push((await h.tasks.start(input(type))).taskId);
    for (const taskId of ids.slice(0, 6)) await h.tasks.cancel(taskId);
    for (const taskId of ids.slice(0, 6)) await h.tasks.result(taskId);
    const expected = [
      { state: 'cancelled', type, mode: 'undecided', count: 6 },
      { state: 'pending', type, mode: 'undecided', count: 6 },
    ];
    await waitFor(async () => (JSON.stringify(ofTypes(await tallied(h), [type])) === JSON.stringify(expected) ? true : undefined), 'the tallies to count the tasks');
    // The shard of the first cancelled task goes; the others keep running, their counts untouched.
    const lost = tallyShardOf(ids[0]!);
    const others = SHARDS.filter((shard) => shard !== lost);
    const runsBefore = await Promise.all(others.map(async (shard) => (await tallyOf(h, shard).describe()).runId));
    await tallyOf(h, lost).terminate('an operator cleaning up');
    await waitFor(async () => (JSON.stringify(await visibilityRows(h, [type])) === JSON.stringify(expected) ? true : undefined), 'visibility to show the tasks');

    const reader = new TaskTallyReader({ client: h.client, tasks: h.tasks, types: [...h.config.types, type] });
    expect(ofTypes(await reader.read(), [type])).toEqual(expected);
    expect((await tallyOf(h, lost).describe()).status.name).toBe('RUNNING');
    expect(await Promise.all(others.map(async (shard) => (await tallyOf(h, shard).describe()).runId))).toEqual(runsBefore);
    // What every shard now answers sums to the same: the closed tasks the others count are not counted again.
    expect(ofTypes(await tallied(h), [type])).toEqual(expected);
    for (const taskId of ids.slice(6)) await h.tasks.cancel(taskId);
  });

  it('a tally that does not answer is read from its last answer for a while, without a visibility call; after that the read fails (the stats count from visibility)', async () => {
    const type = uniqueType('tally');
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) ids.push((await h.tasks.start(input(type))).taskId);
    const expected = [{ state: 'pending', type, mode: 'undecided', count: 4 }];
    await waitFor(async () => (JSON.stringify(ofTypes(await tallied(h), [type])) === JSON.stringify(expected) ? true : undefined), 'the tallies to count the tasks');
    const logged: string[] = [];
    const reader = new TaskTallyReader({
      client: counting.client,
      tasks: counting.tasks,
      types: [...h.config.types, type],
      lastAnswerForMs: 6_000,
      checkEveryMs: 3_600_000,
      log: { info: (_object, message) => logged.push(message) },
    });
    expect(ofTypes(await reader.read(), [type])).toEqual(expected);
    // The first task's tally stops answering: replaced by a run no worker serves, as if its worker were stuck.
    const stuck = tallyShardOf(ids[0]!);
    await tallyOf(h, stuck).terminate('test: a tally whose worker is stuck');
    await h.client.workflow.start<typeof taskTallyWorkflow>(TASK_TALLY_WORKFLOW_TYPE, { workflowId: taskTallyWorkflowId(stuck), taskQueue: `no-worker-${type}`, args: [{}] });
    try {
      const visibilityBefore = counting.visibilityCalls();
      expect(ofTypes(await reader.read(), [type])).toEqual(expected);
      expect(logged).toContain('a task tally did not answer: its last answer stands in');
      expect(counting.visibilityCalls()).toBe(visibilityBefore);
      await new Promise((resolve) => setTimeout(resolve, 6_100)); // its last answer is too old now
      await expect(reader.read()).rejects.toThrow();
    } finally {
      // The stuck run goes; a reader that checks the tallies starts that one again, seeded from visibility.
      await tallyOf(h, stuck).terminate('test: done');
      const checking = new TaskTallyReader({ client: h.client, tasks: h.tasks, types: [...h.config.types, type], checkEveryMs: 0 });
      expect(ofTypes(await checking.read(), [type])).toEqual(expected);
      for (const taskId of ids) await h.tasks.cancel(taskId);
    }
  });

  it('a tally continues-as-new while tells stream in: no try of it is refused, and every tell is counted once', async () => {
    const type = uniqueType('tally');
    await statsOf(app); // the tallies run (the first answer starts any that does not)
    const shard = 3;
    const tally = tallyOf(h, shard);
    const firstRun = (await tally.describe()).runId;
    const { tellTaskTally } = createReportActivities();
    // Tasks of one shard, each told once it has completed, eight tells on their way at any time,
    // until the tally has continued-as-new twice.
    const taskIds = (function* () {
      for (let i = 0; ; i++) if (tallyShardOf(`stream-${type}-${i}`) === shard) yield `stream-${type}-${i}`;
    })();
    const runs = new Set([firstRun]);
    let told = 0;
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (runs.size < 3 && told < 2_000) {
          const taskId = taskIds.next().value!;
          told++;
          await new MockActivityEnvironment({ activityId: '1', workflowExecution: { workflowId: taskId, runId: `run-of-${taskId}` } }, { client: h.client }).run(tellTaskTally, { taskId, to: { state: 'completed', type, mode: 'http_pull' } });
          runs.add((await tally.describe()).runId);
        }
      }),
    );
    expect(runs.size).toBeGreaterThanOrEqual(3);
    expect(ofTypes(await tally.query(taskCountsQuery), [type])).toEqual([{ state: 'completed', type, mode: 'http_pull', count: told }]);
    // Every run from the first to the current one: none had a workflow task refused.
    const chain = await runsFrom(h, shard, firstRun);
    expect(chain.length).toBeGreaterThanOrEqual(3);
    const refused = chain.flatMap(({ runId, events }) =>
      events.flatMap((event) => {
        const failed = event.workflowTaskFailedEventAttributes;
        return failed ? [`${runId}: workflow task failed, ${temporal.api.enums.v1.WorkflowTaskFailedCause[failed.cause ?? 0]}`] : [];
      }),
    );
    expect(refused).toEqual([]);
  });

  it('tells that come in while one is on its way to a tally go together: a burst of 200 is two Updates, and each counted once', async () => {
    const type = uniqueType('tally');
    await statsOf(app);
    const shard = 5;
    const firstRun = (await tallyOf(h, shard).describe()).runId;
    const taskIds = Array.from({ length: 2_000 }, (_, i) => `burst-${type}-${i}`)
      .filter((id) => tallyShardOf(id) === shard)
      .slice(0, 200);
    const teller = new TaskTallyTeller(h.client);
    await Promise.all(taskIds.map((taskId) => teller.tell({ tellId: `tell-${taskId}`, transition: { taskId, to: { state: 'completed', type, mode: 'http_pull' } } })));
    expect(ofTypes(await tallied(h), [type])).toEqual([{ state: 'completed', type, mode: 'http_pull', count: 200 }]);
    // The first went alone; the 199 that came in meanwhile, in the one after it.
    const batches = (await runsFrom(h, shard, firstRun))
      .flatMap(({ events }) => events.flatMap((event) => event.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input?.args?.payloads ?? []))
      .map((payload) => defaultPayloadConverter.fromPayload<TaskTell[]>(payload).filter((tell) => tell.transition.to.type === type).length)
      .filter((n) => n > 0);
    expect(batches).toEqual([1, 199]);
    await recordHistory(h, 'tally-tells-by-updates', taskTallyWorkflowId(shard));
  });

  it("a tell whose activity timed out or was cancelled while it waited for the tally is not sent (the activity's next try tells it)", async () => {
    const type = uniqueType('tally');
    await statsOf(app);
    const teller = new TaskTallyTeller(h.client);
    const [first, abandoned, last] = Array.from({ length: 2_000 }, (_, i) => `abandoned-${type}-${i}`)
      .filter((id) => tallyShardOf(id) === 6)
      .slice(0, 3)
      .map((taskId) => ({ tellId: `tell-${taskId}`, transition: { taskId, to: { state: 'completed', type, mode: 'http_pull' } } }));
    const sending = teller.tell(first!); // on its way: the next ones wait for it
    const activity = new AbortController();
    const waiting = teller.tell(abandoned!, activity.signal);
    activity.abort(new Error('the activity timed out'));
    await expect(waiting).rejects.toThrow('the activity timed out');
    await Promise.all([sending, teller.tell(last!)]);
    expect(ofTypes(await tallied(h), [type])).toEqual([{ state: 'completed', type, mode: 'http_pull', count: 2 }]);
  });

  it("a tellTaskTally activity tried again after its tell landed (its completion lost) does not count a closed task twice: its tries share one tell id", async () => {
    const type = uniqueType('tally');
    await tallied(h); // they run: the first test seeded them
    const { tellTaskTally } = createReportActivities();
    const completed = (taskId: string) => ({ taskId, to: { state: 'completed', type, mode: 'http_pull' } });
    const tell = (activityId: string, attempt: number, taskId: string) =>
      new MockActivityEnvironment({ activityId, attempt, workflowExecution: { workflowId: taskId, runId: `run-of-${taskId}` } }, { client: h.client }).run(tellTaskTally, completed(taskId));
    const countOnceSeen = async (count: number) =>
      waitFor(async () => {
        const rows = ofTypes(await tallied(h), [type]);
        return (rows[0]?.count ?? 0) >= count ? rows : undefined;
      }, `the tallies to count ${count}`);
    // A tally takes a tell id once per run: the tells here go to a tally far from its continue-as-new (500 events).
    const lengths = await Promise.all(SHARDS.map(async (shard) => (await tallyOf(h, shard).describe()).historyLength));
    const t1 = Array.from({ length: 256 }, (_, i) => `t1-${i}`).find((id) => lengths[tallyShardOf(id)]! < 400)!;
    // The second try of the same tell changes nothing.
    await tell('7', 1, t1);
    await tell('7', 2, t1);
    // A task in the same shard, told after: once it is counted, so is everything sent before it.
    // The book alone would have counted t1 twice (3).
    const sameShard = Array.from({ length: 256 }, (_, i) => `t2-${i}`).find((id) => tallyShardOf(id) === tallyShardOf(t1))!;
    await tell('7', 1, sameShard);
    expect(await countOnceSeen(2)).toEqual([{ state: 'completed', type, mode: 'http_pull', count: 2 }]);
    // Another tell (another activity) saying the same is taken: what the tell id guards against.
    await tell('8', 1, t1);
    expect(await countOnceSeen(3)).toEqual([{ state: 'completed', type, mode: 'http_pull', count: 3 }]);
  });

  it('the single tally of earlier versions forwards what old task runs still tell it to the shards, in order', async () => {
    await tallied(h); // the shards run
    const type = uniqueType('tally');
    const legacy = await h.client.workflow.start<typeof taskTallyWorkflow>(TASK_TALLY_WORKFLOW_TYPE, {
      workflowId: LEGACY_TASK_TALLY_WORKFLOW_ID,
      taskQueue: TASKS_QUEUE,
      args: [{ state: { open: {}, closed: {} } }],
    });
    try {
      // A task run from before the tally-by-activities patch signals it from workflow code.
      const ids = ['old-1', 'old-2', 'old-3'];
      for (const taskId of ids) await legacy.signal(taskTransitionSignal, [{ taskId, to: { state: 'pending', type, mode: 'undecided' } }]);
      await legacy.signal(taskTransitionSignal, [{ taskId: 'old-1', to: { state: 'running', type, mode: 'http_pull' } }]);
      await legacy.signal(taskTransitionSignal, [{ taskId: 'old-1', to: { state: 'completed', type, mode: 'http_pull' } }, { taskId: 'old-2', to: { state: 'cancelled', type, mode: 'undecided' } }]);
      const expected = [
        { state: 'cancelled', type, mode: 'undecided', count: 1 },
        { state: 'completed', type, mode: 'http_pull', count: 1 },
        { state: 'pending', type, mode: 'undecided', count: 1 },
      ];
      const rows = await waitFor(async () => {
        const got = ofTypes(await tallied(h), [type]);
        return JSON.stringify(got) === JSON.stringify(expected) ? got : undefined;
      }, 'the shards to hear of the old tasks');
      expect(rows).toEqual(expected);
      // Each transition reached the shard of its task, and only that one.
      for (const shard of SHARDS) {
        const mine = ids.filter((id) => tallyShardOf(id) === shard);
        const counted = ofTypes(await tallyOf(h, shard).query(taskCountsQuery), [type]).reduce((sum, row) => sum + row.count, 0);
        expect(counted).toBe(mine.length);
      }
      await recordHistory(h, 'legacy-tally-forwarding', LEGACY_TASK_TALLY_WORKFLOW_ID);
    } finally {
      await legacy.terminate('test over');
    }
  });

  it('with no worker to answer for the tally, the stats count from visibility, and say so in the log', async () => {
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        lines.push(String(chunk));
        done();
      },
    });
    // A harness of its own: stopping its only worker leaves the tally without one.
    const lone = await startHarness();
    try {
      const worker: Worker = await lone.startWorker();
      const loneApp = await lone.app({ logger: pino({ level: 'info' }, sink) });
      const type = 'dev';
      await lone.tasks.start(input(type));
      await waitFor(async () => ((await visibilityRows(lone)).length === 1 ? true : undefined), 'the task in visibility');
      expect(ofTypes((await statsOf(loneApp)).by_state_type_mode, [type])).toEqual([{ state: 'pending', type, mode: 'undecided', count: 1 }]);
      expect(lines.some((line) => line.includes('started a task tally, seeded from visibility'))).toBe(true);
      worker.shutdown();
      await waitFor(() => (worker.getState() === 'STOPPED' ? true : undefined), 'the worker to stop');
      await new Promise((r) => setTimeout(r, 1_100)); // past the shared cache
      expect(ofTypes((await statsOf(loneApp)).by_state_type_mode, [type])).toEqual([{ state: 'pending', type, mode: 'undecided', count: 1 }]);
      expect(lines.some((line) => line.includes('task tally unavailable: counting tasks from visibility'))).toBe(true);
    } finally {
      await lone.close();
    }
  });
});

// Figures, not a test: DROVER_TALLY_BENCH=1 npx vitest run test/task-tally.test.ts -t 'stats latency'
// ~200 tasks in all states, on the shared dev server (visibility limit raised to 100 calls/s) and on
// a dev server of its own with a production namespace's visibility limit (10 calls/s).
describe.runIf(process.env.DROVER_TALLY_BENCH)('stats latency, before (visibility) and after (the tally)', () => {
  const TASKS = Number(process.env.DROVER_TALLY_BENCH_TASKS ?? 200);
  const summary = (ms: number[]) => {
    const sorted = [...ms].sort((a, b) => a - b);
    return { n: sorted.length, p50: Math.round(sorted[Math.floor(sorted.length / 2)]!), max: Math.round(sorted.at(-1)!) };
  };

  async function measure(address: string, label: string): Promise<void> {
    const namespace = 'default';
    const config = testConfig(namespace, { temporal: { address, namespace } });
    const counting = await countingClient(namespace, address);
    const nativeConnection = await NativeConnection.connect({ address });
    const worker = await createTaskWorker({ connection: nativeConnection, namespace, workflowBundle: { codePath: inject('workflowBundlePath') } });
    const running = worker.run();
    const app = await buildApp({ config, client: counting.client, tasks: counting.tasks, logger: false });
    try {
      // A fresh tally for this run (the shared server's default namespace may have one from before).
      for (const shard of SHARDS) await counting.client.workflow.getHandle(taskTallyWorkflowId(shard)).terminate('bench').catch(() => undefined);
      const types = config.types;
      const started: string[] = [];
      const run = `${Date.now()}`;
      await Promise.all(
        Array.from({ length: 16 }, async (_, lane) => {
          for (let i = lane; i < TASKS; i += 16) {
            const type = types[i % types.length]!;
            started.push((await counting.tasks.start({ ...input(type), repo: `bench/tally-${run}`, number: i + 1 })).taskId);
          }
        }),
      );
      const agentOf = (i: number) => ({ kind: 'agent' as const, id: `bench-${i}` });
      await Promise.all(
        started.map(async (taskId, i) => {
          const part = i % 10; // 4/10 stay pending, 1/10 running, 2/10 completed, 1/10 failed, 2/10 cancelled
          if (part < 4) return;
          if (part >= 8) return void (await counting.tasks.cancel(taskId));
          const type = taskId.split(':').at(-1)!;
          const grant = await counting.tasks.claim(taskId, { ...agentOf(i), types: [type] });
          if (part === 5 || part === 6) await counting.tasks.complete(taskId, agentOf(i), grant.attempt, { outcome: 'success', summary: 'ok' });
          if (part === 7) await counting.tasks.fail(taskId, agentOf(i), grant.attempt, 'no');
        }),
      );
      await new Promise((r) => setTimeout(r, 2_000));

      // Before: the task counts of every answer came from visibility.
      const before: number[] = [];
      const beforeCalls: number[] = [];
      for (let i = 0; i < 5; i++) {
        const calls = counting.visibilityCalls();
        const t0 = performance.now();
        await countTasksFromVisibility(counting.tasks, types);
        before.push(performance.now() - t0);
        beforeCalls.push(counting.visibilityCalls() - calls);
      }
      // The first answer finds no tally: it counts from visibility and seeds one.
      let calls = counting.visibilityCalls();
      let t0 = performance.now();
      const first = await statsOf(app);
      const seeding = { ms: Math.round(performance.now() - t0), visibilityCalls: counting.visibilityCalls() - calls };
      // After: every answer is one query of the tally.
      const after: number[] = [];
      const afterCalls: number[] = [];
      let last = first;
      for (let i = 0; i < 10; i++) {
        await new Promise((r) => setTimeout(r, 1_100)); // past the shared cache
        calls = counting.visibilityCalls();
        t0 = performance.now();
        last = await statsOf(app);
        after.push(performance.now() - t0);
        afterCalls.push(counting.visibilityCalls() - calls);
      }
      const visibility = new TaskTallyBook(await countTasksFromVisibility(counting.tasks, types)).counts();
      console.log(
        JSON.stringify({
          label,
          tasks: last.total,
          by_state: last.by_state,
          agrees_with_visibility: JSON.stringify(plain(last.by_state_type_mode)) === JSON.stringify(plain(visibility.sort((a, b) => a.type.localeCompare(b.type) || a.state.localeCompare(b.state) || a.mode.localeCompare(b.mode)))),
          before_visibility_counts_ms: summary(before),
          before_visibility_calls_per_answer: beforeCalls,
          first_answer_seeding: seeding,
          after_stats_answer_ms: summary(after),
          after_visibility_calls_per_answer: afterCalls,
        }),
      );
      expect(afterCalls.every((n) => n === 0)).toBe(true);
      await Promise.all(started.map((taskId) => counting.tasks.cancel(taskId).catch(() => undefined)));
    } finally {
      await app.close();
      worker.shutdown();
      await running.catch(() => undefined);
      await nativeConnection.close();
      await counting.close();
    }
  }

  it('on the shared dev server (100 visibility calls/s)', async () => {
    await measure(inject('temporalAddress'), 'dev server, visibility 100/s');
  }, 600_000);

  it('on a dev server with a production namespace’s visibility limit (10 calls/s)', async () => {
    const env = await startDevServer({ dynamicConfig: { 'frontend.namespaceRPS.visibility': 10 } });
    try {
      await measure(env.address, 'dev server, visibility 10/s (production default)');
    } finally {
      await env.teardown();
    }
  }, 600_000);
});
