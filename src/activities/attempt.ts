// The SSH attempt activity. It runs on the host that picked it up from a typed (or the host's
// own) task queue: it takes a slot, gets the runner ready (connects), asks the task workflow for
// the claim, and runs the agent only if the claim won.
import { Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import type { Claimant, ClaimGrant, TaskResult } from '../model';
import { LogBuffer } from '../run/log-buffer';
import type { HostSlots } from '../workers/host-slots';
import type { AttemptActivities, AttemptOutcome, AttemptRequest } from '../workflows/activity-types';
import { claimUpdate } from '../workflows/messages';
import { updateIds } from '../task-client';
import { asRejection } from '../task-errors';
import type { PreparedRun, Runner } from './runner';

export interface AttemptDeps {
  client: Client;
  hostId: string;
  types: string[];
  slots: HostSlots;
  runner: Runner;
  /** How often the attempt heartbeats while the agent runs (progress, live log and cancellation). */
  heartbeatIntervalMs?: number;
  /** Bounds of the kept log: its first and its latest characters. */
  logHeadChars?: number;
  logTailChars?: number;
}

/** What an attempt's heartbeats carry; the logs endpoint reads the latest from the pending activity. */
export interface AttemptHeartbeat {
  progress: string;
  /** The log so far (bounded like the final one). */
  log?: string;
  /** Characters of output so far, kept or not. */
  logChars?: number;
}

export function createAttemptActivities(deps: AttemptDeps): AttemptActivities {
  const claimant: Claimant = { kind: 'host', id: deps.hostId, types: deps.types };
  return {
    async runAttempt(request: AttemptRequest): Promise<AttemptOutcome> {
      const ctx = Context.current();
      const release = deps.slots.tryAcquire();
      if (!release) {
        return { kind: 'declined', busy: true, reason: deps.slots.online ? `host ${deps.hostId} has no free slot` : `host ${deps.hostId} is offline` };
      }
      // The attempt heartbeats from the start, not only once it runs the agent: getting ready (the
      // SSH connect) and waiting for the workflow's answer to the claim may outlast the heartbeat
      // timeout, which must only ever mean a lost host; and cancellation reaches it here too.
      // Before the claim the heartbeats carry no details (the logs endpoint reads only a running one's).
      let details: (() => AttemptHeartbeat) | undefined;
      const beat = () => (details ? ctx.heartbeat(details()) : ctx.heartbeat());
      beat();
      const beating = setInterval(beat, deps.heartbeatIntervalMs ?? 1_000);
      let prepared: PreparedRun | undefined;
      try {
        if (deps.runner.prepare) {
          try {
            prepared = await deps.runner.prepare({ taskId: request.taskId, hostId: deps.hostId, signal: ctx.cancellationSignal });
          } catch (error) {
            if (ctx.cancellationSignal.aborted) throw ctx.cancellationSignal.reason;
            return { kind: 'declined', reason: `host ${deps.hostId} cannot run it: ${(error as Error).message}` };
          }
        }
        const handle = deps.client.workflow.getHandle(request.taskId, ctx.info.workflowExecution?.runId);
        let grant: ClaimGrant;
        try {
          // The wait for the workflow's answer ends with the attempt (cancelled, host shutting down):
          // with no workflow worker to answer, it would otherwise hold the slot and the shutdown forever.
          grant = await deps.client.withAbortSignal(ctx.cancellationSignal, () =>
            handle.executeUpdate(claimUpdate, { args: [{ claimant, dispatch: request.dispatch }], updateId: updateIds.sshClaim(deps.hostId, request.dispatch) }),
          );
        } catch (error) {
          const rejection = asRejection(error);
          if (rejection) return { kind: 'lost', rejection };
          if (ctx.cancellationSignal.aborted) throw ctx.cancellationSignal.reason;
          throw error;
        }
        const log = new LogBuffer(deps.logHeadChars, deps.logTailChars);
        let lastProgress = 'started';
        // Every heartbeat carries the whole (bounded) log: the server keeps only the latest details.
        details = () => ({ progress: lastProgress, log: log.text(), logChars: log.totalChars });
        beat();
        // The attempt stops itself shortly before its start-to-close timeout, so the agent is killed.
        const deadlineMs = ctx.info.startToCloseTimeoutMs;
        const deadline = new AbortController();
        const deadlineTimer =
          deadlineMs > 0 && deadlineMs < 2 ** 31 - 1
            ? setTimeout(() => deadline.abort(new Error(`run timeout of ${deadlineMs} ms reached`)), Math.max(0, deadlineMs - 1_000))
            : undefined;
        const signal = AbortSignal.any([ctx.cancellationSignal, deadline.signal]);
        try {
          const context = {
            taskId: request.taskId,
            attempt: grant.attempt,
            input: grant.input,
            hostId: deps.hostId,
            signal,
            progress: (message: string) => {
              lastProgress = message;
            },
            output: (text: string) => log.append(text),
          };
          let result: TaskResult | undefined;
          let runError: unknown;
          try {
            result = await (prepared ? prepared.run(context) : deps.runner.run(context));
          } catch (error) {
            runError = error;
          }
          // A runner stopped by cancellation (or one that returns after it) reports the cancellation,
          // and one stopped by the run timeout the timeout, not its own error.
          if (ctx.cancellationSignal.aborted) throw ctx.cancellationSignal.reason;
          if (deadline.signal.aborted) return { kind: 'timed_out', attempt: grant.attempt, log: log.text() };
          if (!result) throw runError;
          return { kind: 'finished', attempt: grant.attempt, result, log: log.text() };
        } finally {
          if (deadlineTimer) clearTimeout(deadlineTimer);
        }
      } finally {
        clearInterval(beating);
        prepared?.close();
        release();
      }
    },
  };
}
