// The cluster tier is the cluster: Temporal server 1.29.1 on PostgreSQL (persistence and SQL
// visibility), the production visibility rate limit, and the priority and fairness matcher of
// docker/temporal-dynamicconfig.yaml serving Drover's own SSH attempts in priority order, then
// fairly across repositories. Run by `npm run test:cluster` only: on the dev server these fail.
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import type { TaskInput } from '../../src/model';
import { typeQueue } from '../../src/names';
import { connectTestTemporal, type TestTemporal, uniqueRepo, uniqueType, waitFor } from '../support/temporal';

let t: TestTemporal;
beforeAll(async () => {
  t = await connectTestTemporal();
  await t.startTaskWorker();
});
afterAll(async () => t?.close());

let numbers = 0;
function input(agentType: string, repo: string, priority: number): TaskInput {
  numbers += 1;
  // A long match window: the attempts wait on the type's queue for the whole test.
  return { agentType, kind: 'implement', repo, number: numbers, title: `task ${numbers}`, prompt: 'do it', priority, options: { matchWindowMs: 300_000 } };
}

/** Starts the task and waits until its SSH attempt waits on the type's queue. */
async function startScheduled(task: TaskInput, started: string[]): Promise<string> {
  const { taskId } = await t.tasks.start(task);
  started.push(taskId);
  await waitFor(async () => {
    const { raw } = await t.client.workflow.getHandle(taskId).describe();
    return raw.pendingActivities?.some((a) => a.activityType?.name === 'runAttempt') ? true : undefined;
  }, `${taskId}: its attempt scheduled`);
  return taskId;
}

/**
 * Waits until matching holds `count` attempts in the type queue's backlog: history hands a
 * scheduled activity to matching asynchronously, so "scheduled" in the workflow is not enough.
 * Backlog counts come from a cache of a few seconds: this takes up to about 5 s.
 */
async function backlogReaches(type: string, count: number): Promise<void> {
  await waitFor(async () => {
    const { stats } = await t.client.workflowService.describeTaskQueue({
      namespace: t.namespace,
      taskQueue: { name: typeQueue(type), kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
      taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
      reportStats: true,
    });
    return Number(stats?.approximateBacklogCount ?? 0) >= count ? true : undefined;
  }, `${count} attempts in the backlog of ${typeQueue(type)}`);
  // Counted once written; matching loads a new task into its matcher a moment later (longer on a
  // busy machine). A host that polls in between would see an order no real backlog has.
  await new Promise((r) => setTimeout(r, 2_000));
}

/** What a host polling the type's queue gets next: the task id of the attempt. */
async function nextAttempt(type: string): Promise<string | undefined> {
  const task = await t.client.connection.withDeadline(Date.now() + 30_000, () =>
    t.client.workflowService.pollActivityTaskQueue({ namespace: t.namespace, taskQueue: { name: typeQueue(type) }, identity: `cluster-test-${type}` }),
  );
  expect(task.activityType?.name).toBe('runAttempt');
  return task.workflowExecution?.workflowId ?? undefined;
}

async function terminate(taskIds: string[]): Promise<void> {
  await Promise.allSettled(taskIds.map((id) => t.client.workflow.getHandle(id).terminate('cluster test done')));
}

describe('the cluster tier', () => {
  test('is Temporal server 1.29 on PostgreSQL, persistence and visibility alike', async () => {
    const info = await t.client.workflowService.getClusterInfo({});
    expect(info.serverVersion).toMatch(/^1\.29\./);
    expect(info.persistenceStore).toMatch(/^postgres/);
    expect(info.visibilityStore).toMatch(/^postgres/);
    expect(info.historyShardCount).toBe(4);
    const system = await t.client.workflowService.getSystemInfo({});
    expect(system.serverVersion).toMatch(/^1\.29\./);
  });

  test("has the production visibility limit: 10 calls a second per namespace, so a burst is throttled", async () => {
    // The cluster's own namespace, so the burst slows none of the other tests (they use `default`),
    // and a connection without the SDK's retry of throttled calls, so the throttling shows.
    const namespace = inject('clusterNamespace');
    const raw = await Connection.connect({ address: inject('temporalAddress'), interceptors: [] });
    try {
      const results = await Promise.allSettled(
        Array.from({ length: 40 }, () => raw.workflowService.countWorkflowExecutions({ namespace, query: "DroverState = 'pending'" })),
      );
      const throttled = results.filter((r) => r.status === 'rejected' && /RESOURCE_EXHAUSTED|rate limit/i.test(String(r.reason)));
      expect(results.filter((r) => r.status === 'fulfilled').length).toBeGreaterThan(0);
      expect(throttled.length).toBeGreaterThanOrEqual(20);
    } finally {
      await raw.close();
    }
  });

  test('matches by priority: a host that comes after both attempts wait gets priority 1 before 5', async () => {
    const type = uniqueType('prio');
    const repo = uniqueRepo();
    const started: string[] = [];
    try {
      const low = await startScheduled(input(type, repo, 5), started);
      const high = await startScheduled(input(type, repo, 1), started);
      await backlogReaches(type, 2);
      // The old matcher hands out a queue's backlog in arrival order: low first.
      expect(await nextAttempt(type)).toBe(high);
      expect(await nextAttempt(type)).toBe(low);
    } finally {
      await terminate(started);
    }
  });

  test('matches fairly across repositories: one task of a second repository is not behind a first one’s backlog', async () => {
    const type = uniqueType('fair');
    const busy = uniqueRepo();
    const other = uniqueRepo();
    const started: string[] = [];
    try {
      for (let i = 0; i < 4; i++) await startScheduled(input(type, busy, 3), started);
      const single = await startScheduled(input(type, other, 3), started);
      await backlogReaches(type, 5);
      // Without fairness it would come fifth, after the busy repository's four.
      const firstTwo = [await nextAttempt(type), await nextAttempt(type)];
      expect(firstTwo).toContain(single);
    } finally {
      await terminate(started);
    }
  });
});
