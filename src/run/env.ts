// What an agent command learns about its task from its environment (never from its command line).
import type { TaskInput } from '../model';

export interface TaskEnvContext {
  taskId: string;
  attempt: number;
  input: TaskInput;
  /** The SSH host or pull agent running the task. */
  instanceId: string;
}

/** A branch name the agent may push its work to: `drover/implement-42`, `drover/custom-<id>`. */
export function suggestedBranch(taskId: string, input: Pick<TaskInput, 'kind' | 'number'>): string {
  const base = input.number > 0 ? `${input.kind}-${input.number}` : `${input.kind}-${taskId}`;
  const safe = base
    .replace(/[^A-Za-z0-9._-]+/g, '-')
    .replace(/\.{2,}/g, '.')
    .replace(/^[-.]+|[-.]+$/g, '')
    .slice(0, 80);
  return `drover/${safe || 'task'}`.replace(/\.lock$/, '');
}

export function taskEnvironment(ctx: TaskEnvContext): Record<string, string> {
  const { input } = ctx;
  const env: Record<string, string> = {
    DROVER_TASK_ID: ctx.taskId,
    DROVER_ATTEMPT: String(ctx.attempt),
    DROVER_AGENT_TYPE: input.agentType,
    DROVER_KIND: input.kind,
    DROVER_REPO: input.repo,
    DROVER_NUMBER: String(input.number),
    DROVER_SESSION_KEY: input.sessionKey ?? '',
    DROVER_BRANCH: suggestedBranch(ctx.taskId, input),
    DROVER_TASK_URL: input.url ?? '',
    DROVER_INSTANCE: ctx.instanceId,
  };
  return env;
}

/** The environment of a run that resumes `sessionId` (an earlier session of the task's key), if any. */
export function withResumedSession(env: Record<string, string>, sessionId: string | undefined): Record<string, string> {
  return sessionId ? { ...env, DROVER_RESUME_SESSION_ID: sessionId } : env;
}
