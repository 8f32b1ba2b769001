// What an SSH attempt runs once it has won the claim. The SSH runner (src/ssh) implements this;
// tests plug in in-process runners.
import type { TaskInput, TaskResult } from '../model';

export interface RunContext {
  taskId: string;
  attempt: number;
  input: TaskInput;
  hostId: string;
  /** Aborts when the task is cancelled or the attempt times out: stop the agent. */
  signal: AbortSignal;
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
