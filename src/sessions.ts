// Session resume: a task whose session key ran before continues that agent session (Claude
// Code's `--resume <id>`, OpenCode's `--session <id>`). Stateless: the earlier task is found in
// Temporal's visibility store by the DroverSessionKey search attribute, and its session id is
// in its result's details (providers put it there).
import { createHash } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { InstanceRef, TaskInput, TaskStatus } from './model';
import { SA, TASK_WORKFLOW_TYPE } from './names';

const READABLE_SESSION_KEY = /^[A-Za-z0-9_.:/@#+-]{1,200}$/;
/**
 * A session id that may be passed to an agent CLI (`--resume <id>`). Ids come from agents' output
 * and from pull agents' reports, so they are untrusted: one starting with `-` would be read as an
 * option (`--resume --dangerously-skip-permissions`). Claude Code's are UUIDs, OpenCode's `ses_…`.
 */
const SESSION_ID = /^[A-Za-z0-9][A-Za-z0-9_.:@+=-]{0,199}$/;

export function isUsableSessionId(value: unknown): value is string {
  return typeof value === 'string' && SESSION_ID.test(value);
}
const AGENT_TYPE = /^[A-Za-z0-9_-]{1,63}$/;

/**
 * The DroverSessionKey value of a session key: the key itself when it is plain
 * (`acme/web#42:dev`), otherwise its digest; either way safe inside a visibility query.
 */
export function sessionKeyAttribute(sessionKey: string): string {
  if (READABLE_SESSION_KEY.test(sessionKey)) return sessionKey;
  return `sha256-${createHash('sha256').update(sessionKey, 'utf8').digest('hex')}`;
}

export interface EarlierSession {
  sessionId: string;
  /** The task that ran it. */
  taskId: string;
  /** Where it ran: agent sessions usually live on that machine only. */
  holder?: InstanceRef;
  closedAt?: string;
}

export type SessionLookup = (input: TaskInput) => Promise<EarlierSession | undefined>;

/** The latest closed task of the same agent type and session key that reported a session id. */
export async function findEarlierSession(client: Client, input: TaskInput, options: { candidates?: number } = {}): Promise<EarlierSession | undefined> {
  if (!input.sessionKey || !AGENT_TYPE.test(input.agentType)) return undefined;
  const query = [
    `WorkflowType = '${TASK_WORKFLOW_TYPE}'`,
    `ExecutionStatus = 'Completed'`,
    `${SA.state.name} = 'completed'`,
    `${SA.sessionKey.name} = '${sessionKeyAttribute(input.sessionKey)}'`,
    `${SA.agentType.name} = '${input.agentType}'`,
  ].join(' AND ');
  const found: Array<{ workflowId: string; runId: string; closeTime: number }> = [];
  for await (const execution of client.workflow.list({ query, pageSize: 50 })) {
    found.push({ workflowId: execution.workflowId, runId: execution.runId, closeTime: execution.closeTime?.getTime() ?? 0 });
    if (found.length >= 50) break;
  }
  found.sort((a, b) => b.closeTime - a.closeTime);
  for (const candidate of found.slice(0, options.candidates ?? 5)) {
    let status: TaskStatus;
    try {
      status = (await client.workflow.getHandle(candidate.workflowId, candidate.runId, { followRuns: false }).result()) as TaskStatus;
    } catch {
      continue;
    }
    // The digest could in theory collide: the key itself must match.
    if (status?.input?.sessionKey !== input.sessionKey) continue;
    const sessionId = resumableSession(status);
    if (!sessionId) continue;
    const lastAttempt = status.attempts?.[status.attempts.length - 1];
    return { sessionId, taskId: status.taskId, holder: lastAttempt?.holder ?? status.assignee, closedAt: status.closedAt };
  }
  return undefined;
}

/**
 * The session a closed task offers to later tasks of its key: only a run that completed without
 * failing. A failed run's session may be the very one that is gone ("No conversation found"), and
 * resuming it would fail every later task of the key.
 */
export function resumableSession(status: Pick<TaskStatus, 'state' | 'result'>): string | undefined {
  if (status.state !== 'completed' || !status.result || status.result.outcome === 'fail') return undefined;
  const details = status.result.details ?? {};
  if (details.sessionLost === true) return undefined;
  return isUsableSessionId(details.sessionId) ? details.sessionId : undefined;
}

export type ResumePolicy = 'same-instance' | 'always' | 'never';

/** The session id to resume on `instance`, under the policy (sessions live on one machine by default). */
export function sessionToResume(earlier: EarlierSession | undefined, instance: InstanceRef, policy: ResumePolicy): string | undefined {
  if (!earlier || policy === 'never' || !isUsableSessionId(earlier.sessionId)) return undefined;
  if (policy === 'always') return earlier.sessionId;
  if (!earlier.holder) return undefined;
  return earlier.holder.kind === instance.kind && earlier.holder.id === instance.id ? earlier.sessionId : undefined;
}
