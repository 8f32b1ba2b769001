// Workflow tasks by priority on drover.tasks (Temporal's priority keys, with Drover's dynamic config
// on the dev server): Drover's bookkeeping workflows are not held up by a backlog of new tasks'
// workflow tasks. A namespace of its own: no other test's worker serves its queue.
import proto from '@temporalio/proto';
import { NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { createReportActivities } from '../src/activities/report';
import type { TaskInput } from '../src/model';
import { TASKS_QUEUE } from '../src/names';
import { TaskTallyReader } from '../src/task-tally';
import { BOOKKEEPING_PRIORITY } from '../src/workflows/priority';
import { taskTallyWorkflowId } from '../src/workflows/task-tally';
import { TASK_TALLY_SHARDS } from '../src/workflows/task-tally-book';
import { startHarness, type Harness } from './support/http';
import { waitFor } from './support/temporal';

const { EventType, TaskQueueKind, TaskQueueType } = proto.temporal.api.enums.v1;

let h: Harness;
beforeAll(async () => {
  h = await startHarness();
});
afterAll(async () => {
  await h?.close();
});

function task(repo: string, number: number, extra: Partial<TaskInput> = {}): TaskInput {
  return { agentType: 'dev', kind: 'implement', repo, number, title: `t ${number}`, prompt: 'p', ...extra };
}

/** When the workflow's first workflow task was handed to a worker (epoch ms), once it has been. */
async function firstTaskStartedAt(workflowId: string): Promise<number | undefined> {
  const { events } = await h.client.workflow.getHandle(workflowId).fetchHistory();
  const started = events?.find((e) => e.eventType === EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED);
  if (!started?.eventTime) return undefined;
  return Number(started.eventTime.seconds) * 1000 + Math.floor((started.eventTime.nanos ?? 0) / 1e6);
}

describe('workflow tasks by priority', () => {
  test('the task tallies go before a backlog of new tasks’ workflow tasks; a task workflow keeps the default priority', async () => {
    // No worker yet: every first workflow task waits in matching, the backlog's first.
    const backlog: string[] = [];
    for (let number = 1; number <= 20; number++) backlog.push((await h.tasks.start(task('acme/busy', number, { priority: 1 }))).taskId);
    // The first read finds no tally: it starts all eight (it needs no worker to do so).
    await new TaskTallyReader({ client: h.client, tasks: h.tasks, types: h.config.types }).read();
    const tallies = Array.from({ length: TASK_TALLY_SHARDS }, (_, shard) => taskTallyWorkflowId(shard));

    // What the starts asked of matching. A task's own priority (here 1, urgent) is its offers'
    // and SSH attempts', not its workflow's: that would rank its heartbeats and results too.
    const priorityOf = async (id: string) => (await h.client.workflow.getHandle(id).describe()).raw.workflowExecutionInfo?.priority;
    for (const id of tallies) expect(await priorityOf(id)).toMatchObject({ priorityKey: BOOKKEEPING_PRIORITY.priorityKey });
    expect((await priorityOf(backlog[0]!))?.priorityKey ?? 0).toBe(0); // the server's default, 3

    // History hands a new workflow task to matching asynchronously: wait until matching holds
    // them all, so that the order below is matching's, not their arrival's.
    await waitFor(async () => {
      const { stats } = await h.client.workflowService.describeTaskQueue({
        namespace: h.namespace,
        taskQueue: { name: TASKS_QUEUE, kind: TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
        taskQueueType: TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        reportStats: true,
      });
      return Number(stats?.approximateBacklogCount ?? 0) >= backlog.length + tallies.length ? true : undefined;
    }, 'every first workflow task in the backlog');

    // One workflow task at a time: the order matching hands them out in is the order they start.
    const connection = await NativeConnection.connect({ address: inject('temporalAddress') });
    const worker = await Worker.create({
      connection,
      namespace: h.namespace,
      taskQueue: TASKS_QUEUE,
      workflowBundle: { codePath: inject('workflowBundlePath') },
      activities: createReportActivities([]),
      maxConcurrentWorkflowTaskExecutions: 1,
      maxCachedWorkflows: 0, // one poller (a sticky queue needs two)
      maxConcurrentActivityTaskExecutions: 1,
    });
    const running = worker.run();
    try {
      const startedAt = async (ids: string[]) =>
        waitFor(async () => {
          const times = await Promise.all(ids.map(firstTaskStartedAt));
          return times.every((t) => t !== undefined) ? (times as number[]) : undefined;
        }, 'every first workflow task handed out');
      const first = await startedAt(tallies);
      const behind = await startedAt(backlog);
      // Without the bookkeeping priority they would come last: they were started after the backlog.
      expect(Math.max(...first)).toBeLessThan(Math.min(...behind));
    } finally {
      worker.shutdown();
      await running;
      await connection.close();
    }
  });
});
