// A RunContext for calling a runner (the SshRunner) directly, outside a workflow: attempt 1, never
// cancelled nor detached, always held, and the agent's output kept for the test to read.
import type { RunContext } from '../../src/activities/runner';
import type { TaskInput } from '../../src/model';

export function runContext(options: { taskId: string; hostId: string; input: TaskInput; runKey: string }): { ctx: RunContext; output: string[] } {
  const output: string[] = [];
  return {
    output,
    ctx: {
      taskId: options.taskId,
      attempt: 1,
      hostId: options.hostId,
      input: options.input,
      signal: new AbortController().signal,
      runKey: options.runKey,
      detach: new AbortController().signal,
      fenceGraceMs: 30_000,
      mayHold: () => true,
      held: () => {},
      progress: () => {},
      output: (t) => output.push(t),
    },
  };
}
