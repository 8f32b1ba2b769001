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
import { TaskTallyBook, type TaskCount, type TaskTallyState, type TaskTransition } from './task-tally-book';

export const TASK_TALLY_WORKFLOW_TYPE = 'taskTallyWorkflow';
/** The tally of the tasks whose ids fall to `shard` (tallyShardOf). */
export function taskTallyWorkflowId(shard: number): string {
  return `${DROVER_ENTITY_ID_PREFIX}task-tally-${shard}`;
}
/**
 * The one tally of earlier versions, which task runs from before TALLY_BY_ACTIVITIES_PATCH still
 * signal (from workflow code: their histories replay with this id). No reader asks it any more.
 */
export const LEGACY_TASK_TALLY_WORKFLOW_ID = `${DROVER_ENTITY_ID_PREFIX}task-tally`;
/** Task workflows signal the tally under this patch: histories from before it replay without the signals. */
export const TASK_TALLY_PATCH = 'task-tally';

/** Tasks' transitions, in the order they happened (a task sends one at a time). */
export const taskTransitionSignal = wf.defineSignal<[TaskTransition[]]>('taskTransition');
/** Non-zero counts by type, state and mode. */
export const taskCountsQuery = wf.defineQuery<TaskCount[]>('taskCounts');

const MAX_HISTORY_EVENTS = 2_000;

export async function taskTallyWorkflow(args: { state?: TaskTallyState } = {}): Promise<void> {
  const book = new TaskTallyBook(args.state);
  wf.setHandler(taskTransitionSignal, (transitions) => {
    // A malformed transition is skipped: a throw here would fail the workflow task over and over.
    for (const transition of Array.isArray(transitions) ? transitions : []) book.apply(transition);
  });
  wf.setHandler(taskCountsQuery, () => book.counts());

  // Transitions keep arriving for as long as tasks run: start a fresh history now and then.
  await wf.condition(() => {
    const info = wf.workflowInfo();
    return info.continueAsNewSuggested || info.historyLength >= MAX_HISTORY_EVENTS;
  });
  await wf.condition(wf.allHandlersFinished);
  await wf.continueAsNew<typeof taskTallyWorkflow>({ state: book.snapshot() });
}
