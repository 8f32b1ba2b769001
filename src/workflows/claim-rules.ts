// The claim rules: who may take, keep and finish a task. One small pure module, so that every
// path (SSH match, HTTP dequeue, coordinator assign) is judged the same way and unit tests can
// drive it without a server. The task workflow applies these in its Update validators; since a
// workflow handles one message at a time, of any number of simultaneous claimants exactly one wins.
import type { Claimant, InstanceRef, TaskStatus } from '../model';
import { isClosed } from '../model';

export const REJECTION_CODES = [
  'task_closed',
  'task_not_pending',
  'task_not_running',
  'wrong_agent_type',
  'reserved_for_other',
  'stale_dispatch',
  'not_lease_holder',
  'stale_attempt',
  'task_held',
] as const;
export type RejectionCode = (typeof REJECTION_CODES)[number];

export interface Rejection {
  code: RejectionCode;
  message: string;
}

const reject = (code: RejectionCode, message: string): Rejection => ({ code, message });

export function sameInstance(a: InstanceRef | undefined, b: InstanceRef | undefined): boolean {
  return !!a && !!b && a.kind === b.kind && a.id === b.id;
}

export function describeInstance(ref: InstanceRef): string {
  return `${ref.kind === 'host' ? 'SSH host' : 'pull agent'} ${ref.id}`;
}

/**
 * May `claimant` claim the task now? `dispatch` is the SSH attempt's dispatch number: an attempt
 * scheduled before the task was reassigned or redispatched must not win a claim meant for a newer one.
 */
export function checkClaim(
  task: TaskStatus,
  claimant: Claimant,
  dispatch: number | undefined,
  currentDispatch: number,
): Rejection | null {
  if (isClosed(task.state)) return reject('task_closed', `task ${task.taskId} is already ${task.state}`);
  if (task.state !== 'pending') return reject('task_not_pending', `task ${task.taskId} is already ${task.state}`);
  if (task.cancelRequested) return reject('task_closed', `task ${task.taskId} is being cancelled`);
  if (!claimant.types.includes(task.input.agentType)) {
    return reject('wrong_agent_type', `${describeInstance(claimant)} does not serve agent type ${task.input.agentType}`);
  }
  if (task.hold) return reject('task_held', `task ${task.taskId} is held until ${task.hold.until}: ${task.hold.reason}`);
  if (task.reservedFor && !sameInstance(task.reservedFor, claimant)) {
    return reject('reserved_for_other', `task ${task.taskId} is reserved for ${describeInstance(task.reservedFor)}`);
  }
  if (claimant.kind === 'host') {
    if (dispatch !== currentDispatch) {
      return reject('stale_dispatch', `SSH attempt dispatch ${dispatch} is stale (current ${currentDispatch})`);
    }
  } else if (task.mode === 'ssh_cli') {
    // Reserved for a host (the reservation check above already turned other agents away).
    return reject('reserved_for_other', `task ${task.taskId} runs on SSH hosts only`);
  }
  return null;
}

/** May the task be reserved for `target`? Only pending tasks can be assigned. */
export function checkAssign(task: TaskStatus, target: Claimant): Rejection | null {
  if (isClosed(task.state)) return reject('task_closed', `task ${task.taskId} is already ${task.state}`);
  if (task.state !== 'pending') return reject('task_not_pending', `task ${task.taskId} is ${task.state}; only pending tasks can be assigned`);
  if (task.cancelRequested) return reject('task_closed', `task ${task.taskId} is being cancelled`);
  if (!target.types.includes(task.input.agentType)) {
    return reject('wrong_agent_type', `${describeInstance(target)} does not serve agent type ${task.input.agentType}`);
  }
  return null;
}

/**
 * A pull agent's attempt whose lease lapsed. Until another attempt starts (or an operator assigns
 * the task, or the attempt's run deadline passes), its holder's late heartbeat takes the task back
 * and its late result is taken: a lease that lapsed because the holder's messages could not get
 * through (an outage of Temporal's database, of every API process) costs no finished work.
 */
export interface LapsedAttempt {
  attempt: number;
  /** The attempt's run deadline (epoch ms): a run past it timed out, whatever its holder says. */
  until: number;
}

/**
 * Heartbeat, complete, fail and release are accepted only from the current holder of the current
 * attempt: an agent whose lease lapsed and was reclaimed cannot finish the task another now runs.
 * The one exception is `lapsed`, the attempt whose lease lapsed when no other has started since:
 * its holder's late word is taken until the attempt's run deadline.
 */
export function checkHolder(task: TaskStatus, holder: InstanceRef, attempt: number, lapsed?: LapsedAttempt, now = 0): Rejection | null {
  if (isClosed(task.state)) return reject('task_closed', `task ${task.taskId} is already ${task.state}`);
  if (task.state === 'pending' && lapsed && now < lapsed.until && isLapsedHolder(task, holder, attempt, lapsed.attempt)) return null;
  if (task.state !== 'running') return reject('task_not_running', `task ${task.taskId} is ${task.state}`);
  if (holder.kind !== 'agent' || task.mode !== 'http_pull') {
    return reject('not_lease_holder', `task ${task.taskId} is held by an SSH attempt, which reports through its activity`);
  }
  if (!sameInstance(task.assignee, holder)) {
    return reject('not_lease_holder', `${describeInstance(holder)} does not hold task ${task.taskId}`);
  }
  if (attempt !== task.attempt) {
    return reject('stale_attempt', `attempt ${attempt} of task ${task.taskId} is over (current attempt ${task.attempt})`);
  }
  return null;
}

/** Is `holder` the holder of `attempt`, the lapsed attempt no other has followed? */
function isLapsedHolder(task: TaskStatus, holder: InstanceRef, attempt: number, lapsedAttempt: number): boolean {
  const last = task.attempts[task.attempts.length - 1];
  return (
    attempt === lapsedAttempt &&
    attempt === task.attempt &&
    !task.cancelRequested &&
    last?.attempt === attempt &&
    last.end === 'lease_lapsed' &&
    holder.kind === 'agent' &&
    sameInstance(last.holder, holder)
  );
}

export function checkCancel(task: TaskStatus): Rejection | null {
  if (isClosed(task.state)) return reject('task_closed', `task ${task.taskId} is already ${task.state}`);
  return null;
}

/** After an attempt is lost: try again, or has the task used up its attempts? */
export function attemptsExhausted(task: Pick<TaskStatus, 'lostAttempts' | 'options'>): boolean {
  return task.lostAttempts >= task.options.maxAttempts;
}
