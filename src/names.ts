// Names shared by workflows, workers, the API and operators' tooling.
// Pure: imported by workflow code.
import { defineSearchAttributeKey, SearchAttributeType } from '@temporalio/common';
import type { TaskInput, TaskKind } from './model';

/** The workflow worker's queue: task workflows and their bookkeeping activities. */
export const TASKS_QUEUE = 'drover.tasks';

/** Hosts serving an agent type poll this queue: Temporal's matching is the host match. */
export function typeQueue(agentType: string): string {
  return `drover.ssh.${agentType}`;
}

/** A host's own queue, for tasks a coordinator assigned to it. */
export function hostQueue(hostId: string): string {
  return `drover.host.${hostId}`;
}

/**
 * The runs of a host's claimed attempts. Unlike the queues above it is polled whatever the host's
 * slots (a run holds the slot its claim took), so a worker that restarts takes its runs back at once.
 */
export function runQueue(hostId: string): string {
  return `drover.run.${hostId}`;
}

/**
 * Pull agents' queue for an agent type: each pending task offers itself here, and an API process
 * polls it only while one of its agents of that type waits. Temporal's matching is the pull match.
 */
export function pullQueue(agentType: string): string {
  return `drover.pull.${agentType}`;
}

/** One pull agent's own queue, for tasks a coordinator assigned to it: polled wherever it waits. */
export function agentPullQueue(agentId: string): string {
  return `drover.agent.${agentId}`;
}

export const TASK_WORKFLOW_TYPE = 'taskWorkflow';

export const SA = {
  state: defineSearchAttributeKey('DroverState', SearchAttributeType.KEYWORD),
  mode: defineSearchAttributeKey('DroverMode', SearchAttributeType.KEYWORD),
  agentType: defineSearchAttributeKey('DroverAgentType', SearchAttributeType.KEYWORD),
  assignee: defineSearchAttributeKey('DroverAssignee', SearchAttributeType.KEYWORD),
  repo: defineSearchAttributeKey('DroverRepo', SearchAttributeType.KEYWORD),
  number: defineSearchAttributeKey('DroverNumber', SearchAttributeType.INT),
  kind: defineSearchAttributeKey('DroverKind', SearchAttributeType.KEYWORD),
  /** The task's session key (see sessionKeyAttribute): how a later task finds the session to resume. */
  sessionKey: defineSearchAttributeKey('DroverSessionKey', SearchAttributeType.KEYWORD),
} as const;

/** Search attributes as `name=Type` pairs, the form the Temporal CLI takes. */
export const SEARCH_ATTRIBUTE_DEFINITIONS: ReadonlyArray<{ name: string; type: 'Keyword' | 'Int' }> = Object.values(SA).map(
  (key) => ({ name: key.name, type: key.type === SearchAttributeType.INT ? 'Int' : 'Keyword' }),
);

/**
 * Readable, URL-safe task id, also the workflow id: `implement:acme:web:42:dev`. One id per
 * repository + number + kind + agent type, which is what makes a re-delivered event find the open
 * task, while two agent types on one issue (a second assignee) get tasks of their own. Forgejo
 * owner and repository names never contain `:`, so the id is unambiguous.
 */
export function taskId(kind: TaskKind, repo: string, number: number, agentType: string): string {
  return `${kind}:${repo.replace('/', ':')}:${number}:${agentType}`;
}

/**
 * A task's one-line summary, the workflow's static summary in the Web UI. A run started by
 * continue-as-new has no static summary (the SDK cannot carry it), so the workflow shows it in
 * that run's current details instead.
 */
export function taskSummary(input: Pick<TaskInput, 'kind' | 'repo' | 'number' | 'agentType' | 'title'>): string {
  return `${input.kind} ${input.repo}${input.number ? `#${input.number}` : ''} for ${input.agentType}: ${input.title}`.slice(0, 200);
}

/**
 * Drover's own entity workflows (the agent and host registries) live beside the tasks under
 * `drover-…` ids. No task may take such an id, and no task operation reaches them.
 */
export const DROVER_ENTITY_ID_PREFIX = 'drover-';
export function isDroverEntityId(id: string): boolean {
  return id.startsWith(DROVER_ENTITY_ID_PREFIX);
}

/** Task ids are what clients put in URL paths: keep them to a safe alphabet. */
export const TASK_ID_PATTERN = /^[A-Za-z0-9_.:-]{1,200}$/;
