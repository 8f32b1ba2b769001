// The SSH attempt activity. It runs on the host that picked it up from a typed (or the host's
// own) task queue: it takes a slot, asks the task workflow for the claim, and runs the agent
// only if the claim won.
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { Claimant } from '../model';
import type { HostSlots } from '../workers/host-slots';
import type { AttemptActivities, AttemptOutcome, AttemptRequest } from '../workflows/activity-types';
import { claimUpdate } from '../workflows/messages';
import { asRejection } from '../task-errors';
import type { Runner } from './runner';

export interface AttemptDeps {
  client: Client;
  hostId: string;
  types: string[];
  slots: HostSlots;
  runner: Runner;
  /** How often the attempt heartbeats while the agent runs (progress and cancellation). */
  heartbeatIntervalMs?: number;
}

export function createAttemptActivities(deps: AttemptDeps): AttemptActivities {
  const claimant: Claimant = { kind: 'host', id: deps.hostId, types: deps.types };
  return {
    async runAttempt(request: AttemptRequest): Promise<AttemptOutcome> {
      const ctx = Context.current();
      const release = deps.slots.tryAcquire();
      if (!release) return { kind: 'declined', reason: deps.slots.online ? `host ${deps.hostId} has no free slot` : `host ${deps.hostId} is offline` };
      try {
        const handle = deps.client.workflow.getHandle(request.taskId, ctx.info.workflowExecution?.runId);
        let grant;
        try {
          grant = await handle.executeUpdate(claimUpdate, { args: [{ claimant, dispatch: request.dispatch }] });
        } catch (error) {
          const rejection = asRejection(error);
          if (rejection) return { kind: 'lost', rejection };
          throw error;
        }
        let lastProgress = 'started';
        ctx.heartbeat({ progress: lastProgress });
        const beat = setInterval(() => ctx.heartbeat({ progress: lastProgress }), deps.heartbeatIntervalMs ?? 1_000);
        try {
          const runContext = {
            taskId: request.taskId,
            attempt: grant.attempt,
            input: grant.input,
            hostId: deps.hostId,
            signal: ctx.cancellationSignal,
            progress: (message: string) => {
              lastProgress = message;
            },
          };
          const result = await deps.runner.run(runContext).catch((error: unknown) => {
            // A runner stopped by cancellation reports the cancellation, not its own error.
            throw ctx.cancellationSignal.aborted ? ctx.cancellationSignal.reason : error;
          });
          if (ctx.cancellationSignal.aborted) throw ctx.cancellationSignal.reason;
          return { kind: 'finished', attempt: grant.attempt, result };
        } finally {
          clearInterval(beat);
        }
      } finally {
        release();
      }
    },
  };
}
