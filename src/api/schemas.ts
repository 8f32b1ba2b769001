// Schemas (TypeBox) shared by the API's plugins, and the JSON views of Drover's types.
// The HTTP API speaks snake_case; the OpenAPI document is generated from these.
import { Type as T, type Static, type TSchema } from '@sinclair/typebox';
import { EXECUTION_MODES, TASK_KINDS, TASK_STATES, type ClaimGrant, type TaskInput, type TaskStatus } from '../model';
import type { TaskSummary } from '../task-client';

const literals = <V extends string>(values: readonly V[], options: Record<string, unknown> = {}) => T.Union(values.map((v) => T.Literal(v)), options);
const nullable = <S extends TSchema>(schema: S) => T.Union([schema, T.Null()]);

export const AgentId = T.String({ pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$', description: 'agent or SSH host id' });
export const AgentTypeName = T.String({ pattern: '^[a-z0-9][a-z0-9_-]{0,62}$' });
export const TaskIdParam = T.Object({
  id: T.String({ pattern: '^[A-Za-z0-9_.:-]{1,200}$', description: 'task id, e.g. implement:acme:web:42' }),
});
export const StateSchema = literals(TASK_STATES);
export const ModeSchema = literals(EXECUTION_MODES);
export const KindSchema = literals(TASK_KINDS);

export const ErrorSchema = T.Object(
  {
    code: T.String({ description: 'stable error code' }),
    message: T.String(),
  },
  { additionalProperties: true, description: 'every error: a stable code and a readable message' },
);
export const errorResponses = (...statuses: number[]) => Object.fromEntries(statuses.map((s) => [s, ErrorSchema])) as Record<number, typeof ErrorSchema>;

export const InstanceSchema = T.Object({ kind: literals(['host', 'agent'] as const), id: T.String() });

export const ResultSchema = T.Object({
  outcome: literals(['success', 'fork', 'fail'] as const),
  summary: T.String(),
  branch: T.Optional(T.String()),
  rev: T.Optional(T.String()),
  details: T.Optional(T.Record(T.String(), T.Unknown())),
});

export const AttemptSchema = T.Object({
  attempt: T.Integer(),
  holder: InstanceSchema,
  mode: T.String(),
  claimed_at: T.String(),
  ended_at: nullable(T.String()),
  end: T.String(),
  reason: nullable(T.String()),
  retaken: nullable(
    T.Object(
      { at: T.String(), lapsed_at: T.String(), lapse_reason: T.String() },
      { description: 'set when the lease lapsed and its holder took the task back with a late heartbeat or result, before any other attempt started' },
    ),
  ),
});

/** What a task asks for, as a task view and a dequeue grant both show it. */
const TaskInputFields = {
  agent_type: T.String(),
  kind: T.String(),
  repo: T.String(),
  number: T.Integer(),
  title: T.String(),
  prompt: T.String(),
  url: nullable(T.String()),
  session_key: nullable(T.String()),
  checkout: nullable(
    T.Object(
      {
        remote: T.String({ description: 'clone URL of the repository' }),
        base: T.Optional(T.String()),
        branch: T.Optional(T.String()),
        sha: T.Optional(T.String()),
        ref: T.Optional(T.String()),
      },
      { description: 'what the task’s workspace checks out (a worktree per attempt); null: the agent’s working directory' },
    ),
  ),
};

function inputFields(input: TaskInput) {
  return {
    agent_type: input.agentType,
    kind: input.kind,
    repo: input.repo,
    number: input.number,
    title: input.title,
    prompt: input.prompt,
    url: input.url ?? null,
    session_key: input.sessionKey ?? null,
    checkout: input.checkout ?? null,
  };
}

export const TaskViewSchema = T.Object(
  {
    task_id: T.String(),
    state: StateSchema,
    mode: ModeSchema,
    ...TaskInputFields,
    callback_url: nullable(T.String()),
    assignee: nullable(InstanceSchema),
    reserved_for: nullable(InstanceSchema),
    attempt: T.Integer(),
    lost_attempts: T.Integer(),
    max_attempts: T.Integer(),
    lease_expires_at: nullable(T.String()),
    run_deadline_at: nullable(T.String({ description: 'a pull agent’s run ends by then at the latest (the run timeout)' })),
    cancel_requested: T.Boolean(),
    cancel_reason: nullable(T.String()),
    cancelled_by: nullable(T.String()),
    created_at: T.String(),
    updated_at: T.String(),
    claimed_at: nullable(T.String()),
    closed_at: nullable(T.String()),
    hold: nullable(T.Object({ reason: T.String(), until: T.String() }, { description: 'not dispatched before `until` (a daily budget was spent)' })),
    result: nullable(ResultSchema),
    attempts: T.Array(AttemptSchema),
  },
  { description: 'a task' },
);
export type TaskView = Static<typeof TaskViewSchema>;

export function taskView(status: TaskStatus): TaskView {
  const input = status.input;
  return {
    task_id: status.taskId,
    state: status.state,
    mode: status.mode,
    ...inputFields(input),
    callback_url: input.callbackUrl ?? null,
    assignee: status.assignee ?? null,
    reserved_for: status.reservedFor ?? null,
    attempt: status.attempt,
    lost_attempts: status.lostAttempts,
    max_attempts: status.options.maxAttempts,
    lease_expires_at: status.leaseExpiresAt ?? null,
    run_deadline_at: status.runDeadlineAt ?? null,
    cancel_requested: status.cancelRequested,
    cancel_reason: status.cancelReason ?? null,
    cancelled_by: status.cancelledBy ?? null,
    created_at: status.createdAt,
    updated_at: status.updatedAt,
    claimed_at: status.claimedAt ?? null,
    closed_at: status.closedAt ?? null,
    hold: status.hold ?? null,
    result: status.result ?? null,
    attempts: status.attempts.map((a) => ({
      attempt: a.attempt,
      holder: a.holder,
      mode: a.mode,
      claimed_at: a.claimedAt,
      ended_at: a.endedAt ?? null,
      end: a.end,
      reason: a.reason ?? null,
      retaken: a.retaken ? { at: a.retaken.at, lapsed_at: a.retaken.lapsedAt, lapse_reason: a.retaken.lapseReason } : null,
    })),
  };
}

export const TaskSummarySchema = T.Object({
  task_id: T.String(),
  state: nullable(T.String()),
  mode: nullable(T.String()),
  agent_type: nullable(T.String()),
  kind: nullable(T.String()),
  repo: nullable(T.String()),
  number: nullable(T.Integer()),
  assignee: nullable(T.String()),
  started_at: nullable(T.String()),
  closed_at: nullable(T.String()),
});

export function summaryView(task: TaskSummary): Static<typeof TaskSummarySchema> {
  return {
    task_id: task.taskId,
    state: task.state ?? null,
    mode: task.mode ?? null,
    agent_type: task.agentType ?? null,
    kind: task.kind ?? null,
    repo: task.repo ?? null,
    number: task.number ?? null,
    assignee: task.assignee ?? null,
    started_at: task.startedAt ?? null,
    closed_at: task.closedAt ?? null,
  };
}

export const GrantSchema = T.Object({
  task_id: T.String(),
  run_id: T.String({ description: 'the task’s run: with the attempt, names the attempt’s worktree' }),
  attempt: T.Integer({ description: 'pass it back with heartbeat, complete, fail and release' }),
  lease_expires_at: nullable(T.String()),
  lease_ms: T.Integer({
    description:
      'the lease granted with the task (ms). Until a first heartbeat confirms the claim, only the confirm window (tasks.claimConfirm, 15 s): heartbeat at once, then well within each answer’s lease_ms_left',
  }),
  ...TaskInputFields,
});

export function grantView(grant: ClaimGrant, leaseMs: number): Static<typeof GrantSchema> {
  return {
    task_id: grant.taskId,
    run_id: grant.runId,
    attempt: grant.attempt,
    lease_expires_at: grant.leaseExpiresAt ?? null,
    lease_ms: grant.leaseMs ?? grant.input.options?.leaseMs ?? leaseMs,
    ...inputFields(grant.input),
  };
}

/** An optional idempotency key: the same key again is the same request (an Update with the same id). */
export const IdempotencyHeaders = T.Object({
  'idempotency-key': T.Optional(T.String({ minLength: 1, maxLength: 100, pattern: '^[A-Za-z0-9_.:-]+$' })),
});

/** A pull agent's output since its last report: the task's live log (GET …/logs, …/logs/follow). */
export const OutputField = {
  output: T.Optional(T.String({ maxLength: 65_536, description: 'the command’s output since the last heartbeat (the task keeps its latest 16 KiB)' })),
};

/** The holder's part of heartbeat, complete, fail and release bodies. */
export const HolderFields = {
  agent_id: AgentId,
  attempt: T.Integer({ minimum: 1, maximum: 1_000_000, description: 'the attempt the dequeue answer gave' }),
};
