// In-process runners standing in for the SSH runner in workflow tests.
import type { RunContext, Runner } from '../../src/activities/runner';
import type { TaskResult } from '../../src/model';

/** Records every run and answers with `result`, optionally after waiting for `gate`. */
export class RecordingRunner implements Runner {
  readonly runs: RunContext[] = [];
  readonly aborted: string[] = [];
  constructor(
    private readonly behave: (ctx: RunContext) => Promise<TaskResult> = async (ctx) => ({ outcome: 'success', summary: `done ${ctx.taskId} on ${ctx.hostId}` }),
  ) {}

  async run(ctx: RunContext): Promise<TaskResult> {
    this.runs.push(ctx);
    ctx.signal.addEventListener('abort', () => this.aborted.push(ctx.taskId), { once: true });
    return this.behave(ctx);
  }
}

/** Resolves when the signal aborts, rejecting like a killed process would. */
export function untilAborted(signal: AbortSignal): Promise<never> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(new Error('aborted'));
    signal.addEventListener('abort', () => reject(new Error('aborted')), { once: true });
  });
}
