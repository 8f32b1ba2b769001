// What an SSH attempt runs once it has won the claim. The SSH runner (ssh2) implements this;
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
}

export interface Runner {
  run(context: RunContext): Promise<TaskResult>;
}
