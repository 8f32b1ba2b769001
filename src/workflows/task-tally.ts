// The task tally: how many tasks there are by state × agent type × mode, for GET /api/v1/stats,
// without asking Temporal visibility (which cannot group by Drover's search attributes, and allows
// a production namespace ~10 calls a second). TASK_TALLY_SHARDS entity workflows per namespace,
// each counting the tasks whose ids fall to it. Each task tells its tally where the task is as
// its state or mode changes, through an activity (TALLY_BY_ACTIVITIES_PATCH in ./task.ts). The API
// reads the counts with a query to each, and starts those it finds missing, seeded from
// visibility (src/task-tally.ts).
// Deterministic code only.
import * as wf from '@temporalio/workflow';
import { DROVER_ENTITY_ID_PREFIX } from '../names';
import { InOrder } from './in-order';
import { isTell, isTransition, tallyShardOf, TaskTallyBook, type TaskCount, type TaskTallyState, type TaskTell, type TaskTransition } from './task-tally-book';

export const TASK_TALLY_WORKFLOW_TYPE = 'taskTallyWorkflow';
/** The tally of the tasks whose ids fall to `shard` (tallyShardOf). */
export function taskTallyWorkflowId(shard: number): string {
  return `${DROVER_ENTITY_ID_PREFIX}task-tally-${shard}`;
}
/**
 * The one tally of earlier versions, which task runs from before TALLY_BY_ACTIVITIES_PATCH still
 * signal (from workflow code: their histories replay with this id), as do the tellTaskTally
 * activities of workers not yet upgraded. No reader asks it any more: it forwards what it hears to
 * the shards (TALLY_FORWARDING_PATCH).
 */
export const LEGACY_TASK_TALLY_WORKFLOW_ID = `${DROVER_ENTITY_ID_PREFIX}task-tally`;
/** The legacy tally forwards transitions to the shards under this patch: its histories from before replay without the signals. */
export const TALLY_FORWARDING_PATCH = 'task-tally-forwarding';
/** Task workflows signal the tally under this patch: histories from before it replay without the signals. */
export const TASK_TALLY_PATCH = 'task-tally';

/**
 * Tells from the tasks' tellTaskTally activities, in batches (TaskTallyTeller, src/task-tally.ts).
 * An Update, not a signal: the server refuses a continue-as-new while a signal that came in
 * meanwhile waits, not while an Update does. A malformed tell is skipped.
 */
export const tellTaskTransitionsUpdate = wf.defineUpdate<void, [TaskTell[]]>('tellTaskTransitions');
/**
 * Tasks' transitions, in the order they happened: what task runs from before TALLY_BY_ACTIVITIES_PATCH
 * signal the legacy tally, what it forwards to the shards, and what tellTaskTally activities of
 * workers from before the Update send.
 */
export const taskTransitionSignal = wf.defineSignal<[TaskTransition[]]>('taskTransition');
/** Non-zero counts by type, state and mode. */
export const taskCountsQuery = wf.defineQuery<TaskCount[]>('taskCounts');

/**
 * A tally continues-as-new at this many events, so that a worker that has to replay one (after a
 * restart or an eviction) does so quickly: measured on the cluster tier with 10,000 pending tasks,
 * a 2,000-event history took 6–22 s to replay on the loaded worker. A run carries its open tasks
 * over (about 85 bytes each).
 */
const MAX_HISTORY_EVENTS = 500;
/** Runs from before it continue-as-new at 2,000 events, as their histories did. */
export const TALLY_SHORT_HISTORY_PATCH = 'task-tally-short-history';

export async function taskTallyWorkflow(args: { state?: TaskTallyState } = {}): Promise<void> {
  const book = new TaskTallyBook(args.state);
  const maxHistoryEvents = wf.patched(TALLY_SHORT_HISTORY_PATCH) ? MAX_HISTORY_EVENTS : 2_000;
  const legacy = wf.workflowInfo().workflowId === LEGACY_TASK_TALLY_WORKFLOW_ID;
  /** Per shard, forwards in order: a task's moves arrive as they happened. */
  const forwards = new Map<number, InOrder>();
  const forwarding = () => [...forwards.values()].reduce((sum, chain) => sum + chain.inFlight, 0);
  function forward(transitions: TaskTransition[]): void {
    const byShard = new Map<number, TaskTransition[]>();
    for (const transition of transitions) {
      const shard = tallyShardOf(transition.taskId);
      byShard.set(shard, [...(byShard.get(shard) ?? []), transition]);
    }
    for (const [shard, batch] of byShard) {
      const chain = forwards.get(shard) ?? new InOrder();
      forwards.set(shard, chain);
      // No shard yet (nobody has asked for the stats since the upgrade): it is seeded from visibility when one does.
      chain.send(() => wf.getExternalWorkflowHandle(taskTallyWorkflowId(shard)).signal(taskTransitionSignal, batch));
    }
  }

  wf.setHandler(taskTransitionSignal, (transitions) => {
    // A malformed transition is skipped: a throw here would fail the workflow task over and over.
    const valid = (Array.isArray(transitions) ? transitions : []).filter(isTransition);
    for (const transition of valid) book.apply(transition);
    if (legacy && valid.length > 0 && wf.patched(TALLY_FORWARDING_PATCH)) forward(valid);
  });
  /** The tells this run has taken: a tell tried again after it landed (its activity's completion lost) counts once. */
  const tellsTaken = new Set<string>();
  wf.setHandler(
    tellTaskTransitionsUpdate,
    (tells) => {
      for (const tell of tells.filter(isTell)) {
        if (tellsTaken.has(tell.tellId)) continue;
        tellsTaken.add(tell.tellId);
        book.apply(tell.transition);
      }
    },
    {
      // Rejected before it is written to the history.
      validator: (tells) => {
        if (!Array.isArray(tells)) throw new Error('not a list of tells');
      },
    },
  );
  wf.setHandler(taskCountsQuery, () => book.counts());

  // Transitions keep arriving for as long as tasks run: start a fresh history now and then (not
  // while a forward is on its way: the server drops a signal sent in the workflow task that ends the run).
  await wf.condition(() => {
    const info = wf.workflowInfo();
    return (info.continueAsNewSuggested || info.historyLength >= maxHistoryEvents) && forwarding() === 0;
  });
  await wf.condition(wf.allHandlersFinished);
  await wf.continueAsNew<typeof taskTallyWorkflow>({ state: book.snapshot() });
}
