// The one way Drover's processes talk to task workflows: starts, Updates and queries, with
// rejections turned into TaskErrors that carry stable codes.
import { randomUUID } from 'node:crypto';
import { QueryNotRegisteredError, WorkflowExecutionAlreadyStartedError, WorkflowUpdateFailedError, type Client, type WorkflowHandle } from '@temporalio/client';
import { WorkflowNotFoundError, type TypedSearchAttributes } from '@temporalio/common';
import { decodeTypedSearchAttributes } from '@temporalio/common/lib/converter/payload-search-attributes';
import { tsToMs } from '@temporalio/common/lib/time';
import type { Claimant, ClaimGrant, ExecutionMode, HeartbeatAnswer, InstanceRef, TaskInput, TaskKind, TaskResult, TaskState, TaskStatus } from './model';
import { isDroverEntityId, SA, TASK_WORKFLOW_TYPE, TASKS_QUEUE, taskId as makeTaskId, taskSummary } from './names';
import { sessionKeyAttribute } from './sessions';
import { asRejection, TaskError } from './task-errors';
import { newTaskPlace } from './workflows/task-tally-book';
import type { taskWorkflow } from './workflows/task';
import {
  assignUpdate,
  cancelUpdate,
  claimUpdate,
  completeUpdate,
  failUpdate,
  heartbeatUpdate,
  releaseUpdate,
  statusQuery,
} from './workflows/messages';

export interface StartedTask {
  taskId: string;
  /** False when an open task with this id already existed and was returned instead. */
  created: boolean;
}

export interface TaskFilter {
  state?: TaskState;
  mode?: ExecutionMode;
  agentType?: string;
  repo?: string;
  assignee?: string;
  kind?: TaskKind;
  /** Only workflows still open (pending or running, or closing). */
  openOnly?: boolean;
  /** Any of these agent types / modes (the dequeue watcher asks for all waiting agents at once). */
  agentTypes?: string[];
  modes?: ExecutionMode[];
}

export interface TaskPage {
  tasks: TaskSummary[];
  /** Opaque token for the next page; absent on the last page. */
  nextPageToken?: string;
}

export interface TaskSummary {
  taskId: string;
  state?: TaskState;
  mode?: ExecutionMode;
  agentType?: string;
  assignee?: string;
  repo?: string;
  number?: number;
  kind?: TaskKind;
  startedAt?: string;
  closedAt?: string;
}

const QUERY_VALUE = /^[A-Za-z0-9_.:/@-]{1,200}$/;

function quote(value: string): string {
  // Visibility queries are strings: accept only values that cannot break out of the quotes.
  if (!QUERY_VALUE.test(value)) throw new TaskError('task_not_found', `invalid filter value ${JSON.stringify(value)}`);
  return `'${value}'`;
}

export function buildListQuery(filter: TaskFilter): string {
  const clauses = [`WorkflowType = '${TASK_WORKFLOW_TYPE}'`];
  if (filter.openOnly) clauses.push(`ExecutionStatus = 'Running'`);
  if (filter.state) clauses.push(`${SA.state.name} = ${quote(filter.state)}`);
  if (filter.mode) clauses.push(`${SA.mode.name} = ${quote(filter.mode)}`);
  if (filter.agentType) clauses.push(`${SA.agentType.name} = ${quote(filter.agentType)}`);
  if (filter.repo) clauses.push(`${SA.repo.name} = ${quote(filter.repo)}`);
  if (filter.assignee) clauses.push(`${SA.assignee.name} = ${quote(filter.assignee)}`);
  if (filter.kind) clauses.push(`${SA.kind.name} = ${quote(filter.kind)}`);
  if (filter.agentTypes) clauses.push(`${SA.agentType.name} IN (${filter.agentTypes.map(quote).join(', ') || "''"})`);
  if (filter.modes) clauses.push(`${SA.mode.name} IN (${filter.modes.map(quote).join(', ') || "''"})`);
  return clauses.join(' AND ');
}

function summaryOf(workflowId: string, sa: TypedSearchAttributes, startTime?: Date, closeTime?: Date): TaskSummary {
  return {
    taskId: workflowId,
    state: sa.get(SA.state) as TaskState | undefined,
    mode: sa.get(SA.mode) as ExecutionMode | undefined,
    agentType: sa.get(SA.agentType),
    assignee: sa.get(SA.assignee),
    repo: sa.get(SA.repo),
    number: sa.get(SA.number),
    kind: sa.get(SA.kind) as TaskKind | undefined,
    startedAt: startTime?.toISOString(),
    closedAt: closeTime?.toISOString(),
  };
}

function notFound(taskId: string): TaskError {
  return new TaskError('task_not_found', `no task ${taskId}`);
}

/**
 * The ids of the task workflow's Updates. Deterministic wherever the request itself names one act:
 * an agent reports an attempt's end once (complete, fail or release), and a task is cancelled once
 * (the first reason stands). Claims, heartbeats and assigns are acts that may rightly repeat, so
 * their ids carry the caller's request id: a retry of the same request is the same Update.
 */
export const updateIds = {
  claim: (claimant: InstanceRef, requestId: string) => `claim/${claimant.kind}/${claimant.id}/${requestId}`,
  /** An SSH attempt's claim: the same for every try of the attempt's activity. */
  sshClaim: (hostId: string, dispatch: number) => `claim/host/${hostId}/dispatch-${dispatch}`,
  heartbeat: (holder: InstanceRef, attempt: number, requestId: string) => `heartbeat/${holder.id}/${attempt}/${requestId}`,
  report: (what: 'complete' | 'fail' | 'release', holder: InstanceRef, attempt: number) => `${what}/${holder.id}/${attempt}`,
  assign: (target: InstanceRef, requestId: string) => `assign/${target.kind}/${target.id}/${requestId}`,
  cancel: () => 'cancel',
};

export class TaskClient {
  constructor(readonly temporal: Client) {}

  private handle(taskId: string): WorkflowHandle<typeof taskWorkflow> {
    return this.temporal.workflow.getHandle<typeof taskWorkflow>(taskId);
  }

  /** Starts the task's workflow, or returns the open task with the same id. */
  async start(input: TaskInput, options: { taskId?: string } = {}): Promise<StartedTask> {
    const taskId = options.taskId ?? makeTaskId(input.kind, input.repo, input.number, input.agentType);
    const summary = taskSummary(input);
    const place = newTaskPlace(input.agentType);
    try {
      await this.temporal.workflow.start<typeof taskWorkflow>(TASK_WORKFLOW_TYPE, {
        taskQueue: TASKS_QUEUE,
        workflowId: taskId,
        args: [{ taskId, input }],
        workflowIdReusePolicy: 'ALLOW_DUPLICATE',
        workflowIdConflictPolicy: 'FAIL',
        staticSummary: summary,
        typedSearchAttributes: [
          { key: SA.state, value: place.state },
          { key: SA.mode, value: place.mode },
          { key: SA.agentType, value: input.agentType },
          { key: SA.repo, value: input.repo },
          { key: SA.number, value: input.number },
          { key: SA.kind, value: input.kind },
          ...(input.sessionKey ? [{ key: SA.sessionKey, value: sessionKeyAttribute(input.sessionKey) }] : []),
        ],
      });
    } catch (error) {
      // The same event again while the task is open: that task is the answer.
      if (error instanceof WorkflowExecutionAlreadyStartedError) return { taskId, created: false };
      throw error;
    }
    return { taskId, created: true };
  }

  async status(taskId: string): Promise<TaskStatus> {
    if (isDroverEntityId(taskId)) throw notFound(taskId);
    try {
      return await this.handle(taskId).query(statusQuery);
    } catch (error) {
      if (error instanceof WorkflowNotFoundError) throw notFound(taskId);
      // Some other workflow of the namespace, with no status query.
      if (error instanceof QueryNotRegisteredError && !(await this.isTask(taskId))) throw notFound(taskId);
      throw error;
    }
  }

  /**
   * Runs an Update under `updateId` and turns the workflow's rejection into a TaskError. Temporal
   * deduplicates Updates by id within a run: a call retried after its answer was lost is the same
   * Update, and gets the first one's answer rather than running again.
   */
  private async update<R>(taskId: string, updateId: string, run: (handle: WorkflowHandle<typeof taskWorkflow>, updateId: string) => Promise<R>): Promise<R> {
    if (isDroverEntityId(taskId)) throw notFound(taskId);
    try {
      return await run(this.handle(taskId), updateId);
    } catch (error) {
      const rejection = asRejection(error);
      if (!rejection) {
        // An Update the workflow has no handler for: some other workflow of the namespace.
        if (error instanceof WorkflowUpdateFailedError && !(await this.isTask(taskId))) throw notFound(taskId);
        throw error;
      }
      if (error instanceof WorkflowNotFoundError && !(await this.isTask(taskId))) throw notFound(taskId);
      throw new TaskError(rejection.code, rejection.message);
    }
  }

  /** Is there a task workflow (open or closed) with this id? */
  private async isTask(taskId: string): Promise<boolean> {
    try {
      return (await this.handle(taskId).describe()).type === TASK_WORKFLOW_TYPE;
    } catch (error) {
      if (error instanceof WorkflowNotFoundError) return false;
      throw error;
    }
  }

  /**
   * A pull agent's claim; `requestId` names the delivery it serves (one Update per delivery and
   * task), `offer` the task's offer it came through.
   */
  claim(taskId: string, claimant: Claimant, options: { requestId?: string; offer?: number } = {}): Promise<ClaimGrant> {
    const { requestId = randomUUID(), offer } = options;
    return this.update(taskId, updateIds.claim(claimant, requestId), (h, id) =>
      h.executeUpdate(claimUpdate, { args: [{ claimant, ...(offer !== undefined ? { offer } : {}) }], updateId: id }),
    );
  }

  /** `output`: the agent's output since its last report, for the task's live log. */
  heartbeat(taskId: string, holder: InstanceRef, attempt: number, options: { output?: string; requestId?: string } = {}): Promise<HeartbeatAnswer> {
    const { output, requestId = randomUUID() } = options;
    return this.update(taskId, updateIds.heartbeat(holder, attempt, requestId), (h, id) =>
      h.executeUpdate(heartbeatUpdate, { args: [{ holder, attempt, ...(output ? { output } : {}) }], updateId: id }),
    );
  }

  complete(taskId: string, holder: InstanceRef, attempt: number, result: TaskResult, output?: string): Promise<TaskStatus> {
    return this.update(taskId, updateIds.report('complete', holder, attempt), (h, id) =>
      h.executeUpdate(completeUpdate, { args: [{ holder, attempt, result, ...(output ? { output } : {}) }], updateId: id }),
    );
  }

  fail(taskId: string, holder: InstanceRef, attempt: number, summary: string, details?: Record<string, unknown>, output?: string): Promise<TaskStatus> {
    return this.update(taskId, updateIds.report('fail', holder, attempt), (h, id) =>
      h.executeUpdate(failUpdate, { args: [{ holder, attempt, summary, details, ...(output ? { output } : {}) }], updateId: id }),
    );
  }

  release(taskId: string, holder: InstanceRef, attempt: number): Promise<TaskStatus> {
    return this.update(taskId, updateIds.report('release', holder, attempt), (h, id) =>
      h.executeUpdate(releaseUpdate, { args: [{ holder, attempt }], updateId: id }),
    );
  }

  /** `requestId`: the caller's idempotency key (an HTTP retry of the same assign is the same Update). */
  assign(taskId: string, target: Claimant, by?: string, requestId: string = randomUUID()): Promise<TaskStatus> {
    return this.update(taskId, updateIds.assign(target, requestId), (h, id) => h.executeUpdate(assignUpdate, { args: [{ target, by }], updateId: id }));
  }

  cancel(taskId: string, reason?: string, by?: string): Promise<TaskStatus> {
    return this.update(taskId, updateIds.cancel(), (h, id) => h.executeUpdate(cancelUpdate, { args: [{ reason, by }], updateId: id }));
  }

  /** Waits for the task to close and returns its final status. */
  async result(taskId: string): Promise<TaskStatus> {
    return this.handle(taskId).result();
  }

  /** Tasks from Temporal's visibility store (eventually consistent), newest first. */
  async list(filter: TaskFilter = {}, limit = 100): Promise<TaskSummary[]> {
    const out: TaskSummary[] = [];
    for await (const execution of this.temporal.workflow.list({ query: buildListQuery(filter), pageSize: Math.min(limit, 1000) })) {
      out.push(summaryOf(execution.workflowId, execution.typedSearchAttributes, execution.startTime, execution.closeTime));
      if (out.length >= limit) break;
    }
    return out;
  }

  /** One page of tasks (newest first), for clients that page with a token. */
  async listPage(filter: TaskFilter = {}, page: { pageSize?: number; pageToken?: string } = {}): Promise<TaskPage> {
    const response = await this.temporal.workflowService.listWorkflowExecutions({
      namespace: this.temporal.options.namespace,
      query: buildListQuery(filter),
      pageSize: Math.max(1, Math.min(page.pageSize ?? 50, 1000)),
      nextPageToken: page.pageToken ? Buffer.from(page.pageToken, 'base64url') : undefined,
    });
    const tasks = (response.executions ?? []).map((raw) =>
      summaryOf(
        raw.execution?.workflowId ?? '',
        decodeTypedSearchAttributes(raw.searchAttributes?.indexedFields),
        raw.startTime ? new Date(tsToMs(raw.startTime)) : undefined,
        raw.closeTime ? new Date(tsToMs(raw.closeTime)) : undefined,
      ),
    );
    const token = response.nextPageToken && response.nextPageToken.length > 0 ? Buffer.from(response.nextPageToken).toString('base64url') : undefined;
    return { tasks, nextPageToken: token };
  }

  /** How many tasks match (Temporal's visibility count). */
  async count(filter: TaskFilter = {}): Promise<number> {
    const { count } = await this.temporal.workflow.count(buildListQuery(filter));
    return count;
  }
}
