// The task tally: how many tasks there are by state × agent type × mode, for GET /api/v1/stats,
// without asking Temporal visibility (which cannot group by Drover's search attributes, and allows
// a production namespace ~10 calls a second). One entity workflow per namespace. Each task tells
// it where the task is as its state or mode changes, through an activity (TALLY_BY_ACTIVITIES_PATCH
// in ./task.ts; runs from before it signal it themselves). The API reads the counts with a query,
// and starts it, seeded from visibility, the first time it finds none (src/task-tally.ts).
// Deterministic code only.
import * as wf from '@temporalio/workflow';
import { DROVER_ENTITY_ID_PREFIX } from '../names';
import { TaskTallyBook, type TaskCount, type TaskTallyState, type TaskTransition } from './task-tally-book';

export const TASK_TALLY_WORKFLOW_TYPE = 'taskTallyWorkflow';
export const TASK_TALLY_WORKFLOW_ID = `${DROVER_ENTITY_ID_PREFIX}task-tally`;
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
