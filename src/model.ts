// Drover's domain vocabulary (see DESIGN.md). Pure types and constants only:
// this module is imported by workflow code, so it must stay free of I/O and Node APIs.

export const TASK_STATES = ['pending', 'running', 'completed', 'failed', 'cancelled'] as const;
export type TaskState = (typeof TASK_STATES)[number];

export const EXECUTION_MODES = ['undecided', 'ssh_cli', 'http_pull'] as const;
export type ExecutionMode = (typeof EXECUTION_MODES)[number];

/** What a task asks the agent to do; one open task per repository + number + kind. */
export const TASK_KINDS = ['implement', 'review', 'address_review', 'merge', 'fix_ci', 'custom'] as const;
export type TaskKind = (typeof TASK_KINDS)[number];

export const RESULT_OUTCOMES = ['success', 'fork', 'fail'] as const;
export type ResultOutcome = (typeof RESULT_OUTCOMES)[number];

export interface TaskResult {
  outcome: ResultOutcome;
  summary: string;
  branch?: string;
  rev?: string;
  /** Provider-specific extras (session id, cost…), kept for operators. */
  details?: Record<string, unknown>;
}

/** An instance that can run tasks: an SSH host slot or a pull agent. */
export type InstanceKind = 'host' | 'agent';
export interface InstanceRef {
  kind: InstanceKind;
  id: string;
}
export interface Claimant extends InstanceRef {
  /** Agent types the instance serves; a claim for another type is rejected. */
  types: string[];
}

export interface TaskOptions {
  /** Phase 1: how long SSH hosts get to pick the task up before it falls back to HTTP pull. */
  matchWindowMs: number;
  /** How long a pull agent's claim lives without a heartbeat. */
  leaseMs: number;
  /** Attempts that may be lost (lease lapse, host lost) before the task fails. */
  maxAttempts: number;
  /** SSH attempts fail when the host worker stops heartbeating for this long. */
  sshHeartbeatTimeoutMs: number;
  /** A run (SSH attempt or pull agent's claim) longer than this is stopped, and the task fails: no retry. */
  runTimeoutMs: number;
  /** The workflow continues-as-new once its history passes this many events. */
  maxHistoryEvents: number;
  /** After a cancel, a pull agent's lease is kept at most this long: time to hear of it and stop. */
  cancelGraceMs: number;
  /**
   * An SSH run that no worker holds for this long stops itself on its host; a claimed attempt whose
   * host's worker does not take it back within it is lost. So a task is dispatched again only once
   * the run it replaces has stopped, and a worker restart within it re-attaches to the run.
   */
  fenceGraceMs: number;
  /**
   * A pull agent's claim lasts only this long until its first heartbeat confirms it (the
   * answer with the grant may never have reached the agent: an API process killed, a dropped
   * connection); then the lease is `leaseMs`. Unset (tasks made before it existed): none.
   */
  claimConfirmMs?: number;
  /**
   * After a pull agent's lease lapses, the task goes to nobody else for this long: its holder's late
   * heartbeat or result (held up by an outage) is still taken, and no finished work is run again.
   * The late word is taken after it too, as long as no other attempt has started. Unset: none.
   */
  lapseGraceMs?: number;
}

export const DEFAULT_TASK_OPTIONS: TaskOptions = {
  matchWindowMs: 30_000,
  leaseMs: 60_000,
  maxAttempts: 3,
  sshHeartbeatTimeoutMs: 30_000,
  runTimeoutMs: 6 * 60 * 60_000,
  maxHistoryEvents: 2_000,
  cancelGraceMs: 30_000,
  fenceGraceMs: 60_000,
};

export interface TaskInput {
  agentType: string;
  kind: TaskKind;
  /** `owner/name`; empty for a hand-made task with no repository. */
  repo: string;
  /** Issue or PR number; 0 when there is none. */
  number: number;
  title: string;
  prompt: string;
  /** Web link to the issue or PR, shown in comments and the summary. */
  url?: string;
  callbackUrl?: string;
  /** Tasks that share a session key resume the same agent session. */
  sessionKey?: string;
  /** What to check out for the agent; none runs it in the machine's working directory. */
  checkout?: TaskCheckout;
  /** Not dispatched before `until` (a daily budget spent when the task was made). */
  hold?: TaskHold;
  /**
   * Temporal's priority key for the task's offers and SSH attempts: 1 goes first, 5 last. Set
   * when the task is made (the kind's configured priority, or the enqueue's own); tasks made
   * before priorities existed take their kind's default.
   */
  priority?: number;
  options?: Partial<TaskOptions>;
}

export interface TaskHold {
  reason: string;
  /** ISO time the hold ends. */
  until: string;
}

/**
 * The repository state a task's agent works in (see src/workspace): a git worktree of `remote`
 * per attempt. Which ref depends on the task's kind: `implement` works on a task branch started
 * from `base`; pull-request kinds on the PR's head `branch` at `sha`; `custom` on `ref`.
 */
export interface TaskCheckout {
  /** Clone URL of the repository, from the config (never from a webhook payload). */
  remote: string;
  /** The repository's default branch, or a pull request's base branch. */
  base?: string;
  /** A pull request's head branch. */
  branch?: string;
  /** A pull request's head commit when the event was sent. */
  sha?: string;
  /** `custom`: a branch, tag or commit to check out (detached). */
  ref?: string;
}

export type AttemptEnd = 'running' | 'completed' | 'failed' | 'lease_lapsed' | 'lost' | 'released' | 'cancelled' | 'timed_out';

export interface AttemptRecord {
  attempt: number;
  holder: InstanceRef;
  mode: Exclude<ExecutionMode, 'undecided'>;
  claimedAt: string;
  endedAt?: string;
  end: AttemptEnd;
  reason?: string;
  /**
   * The last part of the agent's output, kept for `GET /tasks/{id}/logs`: an SSH attempt's when it
   * ends, a pull agent's as it uploads it (its latest PULL_LOG_CHARS).
   */
  logTail?: string;
  /** Characters of output a pull agent has uploaded so far. */
  logChars?: number;
  /**
   * Set when the attempt's lease lapsed and its holder took the task back (a late heartbeat or
   * result, before any other attempt started): when, and why the lease had lapsed.
   */
  retaken?: { at: string; lapsedAt: string; lapseReason: string };
}

export interface TaskStatus {
  taskId: string;
  /** The first run id of this task's workflow: one task id may be run again once closed. */
  runId: string;
  input: TaskInput;
  options: TaskOptions;
  state: TaskState;
  mode: ExecutionMode;
  /** The instance that holds the task (running) or is reserved for it (pending). */
  assignee?: InstanceRef;
  reservedFor?: InstanceRef;
  /** Number of the current (or last) attempt; 0 before the first claim. */
  attempt: number;
  /** Attempts lost so far, counted against options.maxAttempts. */
  lostAttempts: number;
  leaseExpiresAt?: string;
  /** A pull agent's claim ends by then at the latest (runTimeoutMs after the claim). */
  runDeadlineAt?: string;
  cancelRequested: boolean;
  cancelRequestedAt?: string;
  /** While set, the task is not dispatched (nor claimed) before `until`, for `reason`. */
  hold?: TaskHold;
  /** Why, and by whom, as the cancel request said. */
  cancelReason?: string;
  cancelledBy?: string;
  createdAt: string;
  updatedAt: string;
  claimedAt?: string;
  closedAt?: string;
  result?: TaskResult;
  /** The latest attempts (at most MAX_KEPT_ATTEMPTS), oldest first. */
  attempts: AttemptRecord[];
  /** Older attempts no longer listed (a task claimed and given back over and over). */
  attemptsOmitted?: number;
}

/**
 * Attempts a task's status lists. Released attempts are not counted against maxAttempts, so a task
 * can be claimed and given back without end; its status (every query, every report, the
 * continue-as-new payload) must not grow with them.
 */
export const MAX_KEPT_ATTEMPTS = 50;

/** What a claimant receives when its claim wins. */
export interface ClaimGrant {
  taskId: string;
  /** The task's run id: with the attempt, it names an SSH attempt's run on its host. */
  runId: string;
  attempt: number;
  leaseExpiresAt?: string;
  /** The lease granted with the claim (ms): the confirm window, when the task has one. */
  leaseMs?: number;
  input: TaskInput;
}

export interface HeartbeatAnswer {
  leaseExpiresAt: string;
  /**
   * What is left of the lease when the workflow answered. The holder adds it to the time it sent
   * the heartbeat, and so knows by its own clock, whatever the clocks' skew, a time by which the
   * lease has not yet run out (see `drover agent`'s fence).
   */
  leaseMsLeft: number;
  cancelRequested: boolean;
}

export function isClosed(state: TaskState): boolean {
  return state === 'completed' || state === 'failed' || state === 'cancelled';
}
