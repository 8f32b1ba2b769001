// What an SSH attempt runs once it has won the claim. The SSH runner (src/ssh) implements this;
// tests plug in in-process runners.
import { ApplicationFailure } from '@temporalio/common';
import { RUN_LOST } from '../workflows/activity-types';
import type { TaskInput, TaskResult } from '../model';

export interface RunContext {
  taskId: string;
  attempt: number;
  input: TaskInput;
  hostId: string;
  /** Aborts when the task is cancelled or the attempt times out: stop the agent. */
  signal: AbortSignal;
  /**
   * Names the attempt's run wherever it lives: the same for every try of the attempt's activity,
   * so that a worker that restarts finds the run it started (runners that can re-attach).
   */
  runKey: string;
  /**
   * Aborts when the worker shuts down: a runner whose run outlives the worker stops following it
   * and leaves it running (RunDetachedError); the next try of the activity attaches again.
   */
  detach: AbortSignal;
  /** A run that no worker holds for this long stops itself; the workflow counts on it. */
  fenceGraceMs: number;
  /** Whether the worker may still hold the run: false once it has lost touch with Temporal. */
  mayHold(): boolean;
  /** When an earlier try of this attempt last held the run (epoch ms), if one did. */
  lastHeldAt?: number;
  /** The run's lease reached the host at `at` (epoch ms): carried to the next try. */
  held(at: number): void;
  /** Progress for operators; carried on activity heartbeats. */
  progress(message: string): void;
  /** The agent's output as it comes; kept (bounded) and served at `GET /tasks/{id}/logs`. */
  output(text: string): void;
}

/** A run made ready before the claim; `close` is called whatever happens next. */
export interface PreparedRun {
  run(context: RunContext): Promise<TaskResult>;
  close(): void;
}

export interface Runner {
  /**
   * Optional: gets ready before the attempt asks for the claim (the SSH runner connects here).
   * Throwing declines the attempt without claiming, so an unreachable host never takes a task.
   */
  prepare?(request: { taskId: string; hostId: string; signal: AbortSignal }): Promise<PreparedRun>;
  run(context: RunContext): Promise<TaskResult>;
}

/**
 * The run is gone for good: it stopped itself (no worker held it for the fence grace), the host
 * restarted, or it never started. The attempt is lost; trying again cannot bring the run back.
 */
export function runLost(message: string): ApplicationFailure {
  return ApplicationFailure.nonRetryable(message, RUN_LOST);
}

/**
 * Errors that end one try of a run but not the run: the connection to the host dropped, or the
 * worker stopped following it. The next try attaches to the same run. Runners mark them with
 * `retryable: true`; any other error loses the attempt.
 */
export function endsTryOnly(error: unknown): boolean {
  return (error as { retryable?: unknown } | undefined)?.retryable === true;
}

/**
 * A run failed, and could not be stopped: it may still be going. This try ends, not the attempt:
 * the next try attaches to the run, or it stops itself once no worker holds it, and only then is
 * the task dispatched again.
 */
export class RunUnsettledError extends Error {
  override readonly name = 'RunUnsettledError';
  readonly retryable = true;
}
