// The SSH attempt activities, run by the host that picked the attempt up.
// - runAttempt, from a typed (or the host's own) queue: takes a slot, gets the runner ready
//   (connects), and asks the task workflow for the claim. A loser returns at once.
// - runClaimed, from the host's own queue once the claim is won: starts the agent (a run that
//   outlives this worker) or attaches to the one an earlier try started, holds it, and follows it
//   to its end. Retried by Temporal, so that a worker that restarts (deploy, crash) picks the same
//   attempt up again and attaches to the same run: no second agent, and the log goes on.
import { Context } from '@temporalio/activity';
import { ApplicationFailure } from '@temporalio/common';
import type { Client } from '@temporalio/client';
import type { Claimant, ClaimGrant, TaskResult } from '../model';
import { runKey } from '../run/detached';
import { LogBuffer } from '../run/log-buffer';
import { updateIds } from '../task-client';
import { asRejection } from '../task-errors';
import type { HostSlots } from '../workers/host-slots';
import type { AttemptActivities, AttemptOutcome, AttemptRequest, RunRequest } from '../workflows/activity-types';
import { claimUpdate } from '../workflows/messages';
import { endsTryOnly, runLost, type PreparedRun, type RunContext, type Runner } from './runner';

export interface AttemptDeps {
  client: Client;
  hostId: string;
  types: string[];
  slots: HostSlots;
  runner: Runner;
  /** Aborts when the host's workers shut down: runs are left alone, to be attached again. */
  shuttingDown?: AbortSignal;
  /**
   * How often the attempts heartbeat (default 10 s, and a third of the heartbeat timeout at most).
   * Each heartbeat is a write on the server: on Temporal Cloud, a billed action.
   */
  heartbeatIntervalMs?: number;
  /** Bounds of the kept log: its first and its latest characters. */
  logHeadChars?: number;
  logTailChars?: number;
  /** How long a won claim keeps its slot and connection for the run that follows. */
  handOffMs?: number;
}

/** The live log an attempt's heartbeat carries: the latest output only, to keep heartbeats small. */
export const LIVE_LOG_CHARS = 8 * 1024;

/** What an attempt's heartbeats carry; the logs endpoint reads the latest from the pending activity. */
export interface AttemptHeartbeat {
  progress: string;
  /** The latest output (LIVE_LOG_CHARS at most); the whole bounded log comes with the attempt's end. */
  log?: string;
  /** Characters of output so far, kept or not. */
  logChars?: number;
  /** When the worker last held the run (epoch ms): the next try knows how long it has been unheld. */
  heldAt?: number;
}


/**
 * Whether this worker still reaches Temporal: a worker cut off from it for longer than the
 * heartbeat timeout may have had its attempt given up, so it must stop holding the run.
 */
class TemporalContact {
  private lastContactAt = Date.now();
  private checking = false;
  constructor(private readonly client: Client) {}

  reachedWithin(ms: number): boolean {
    this.refresh();
    return Date.now() - this.lastContactAt < ms;
  }

  private refresh(): void {
    if (this.checking) return;
    this.checking = true;
    this.client.connection
      .withDeadline(Date.now() + 5_000, () => this.client.workflowService.getSystemInfo({}))
      .then(
        () => void (this.lastContactAt = Date.now()),
        () => undefined,
      )
      .finally(() => void (this.checking = false));
  }
}

export function createAttemptActivities(deps: AttemptDeps): AttemptActivities {
  const claimant: Claimant = { kind: 'host', id: deps.hostId, types: deps.types };
  const temporal = new TemporalContact(deps.client);
  const heartbeatEvery = (ctx: Context) => Math.max(100, Math.min(deps.heartbeatIntervalMs ?? 10_000, Math.floor((ctx.info.heartbeatTimeoutMs ?? 30_000) / 3)));
  return {
    async runAttempt(request: AttemptRequest): Promise<AttemptOutcome> {
      const ctx = Context.current();
      const release = deps.slots.tryAcquire();
      if (!release) {
        return { kind: 'declined', busy: true, reason: deps.slots.online ? `host ${deps.hostId} has no free slot` : `host ${deps.hostId} is offline` };
      }
      // The attempt heartbeats from the start: getting ready (the SSH connect) and waiting for the
      // workflow's answer to the claim may outlast the heartbeat timeout, which must only ever mean
      // a lost host; and cancellation reaches it here too.
      ctx.heartbeat();
      const beating = setInterval(() => ctx.heartbeat(), heartbeatEvery(ctx));
      let prepared: PreparedRun | undefined;
      let handedOff = false;
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
        // Won: the slot and the connection wait for the run, which comes on the host's own queue.
        deps.slots.handOff(runKey(request.taskId, grant.runId, grant.attempt), { release, prepared }, deps.handOffMs ?? 60_000, (item) => item.prepared?.close());
        handedOff = true;
        return { kind: 'claimed', attempt: grant.attempt };
      } finally {
        clearInterval(beating);
        if (!handedOff) {
          prepared?.close();
          release();
        }
      }
    },

    async runClaimed(request: RunRequest): Promise<AttemptOutcome> {
      const ctx = Context.current();
      const earlier = ctx.info.heartbeatDetails as AttemptHeartbeat | undefined;
      // The slot the claim kept, or (a worker that restarted, attaching again) one counted anyway.
      // The slot the claim kept, or the one a restarted worker kept for a run it found under way.
      const key = runKey(request.taskId, request.runId, request.attempt);
      const handedOff = deps.slots.takeHandOff<{ prepared?: PreparedRun }>(key);
      const release = handedOff?.release ?? deps.slots.forceAcquire();
      const log = new LogBuffer(deps.logHeadChars, deps.logTailChars);
      let lastProgress = ctx.info.attempt > 1 ? 'attaching again' : 'starting';
      // The fence counts from the last hold, or from the first try when none held the run yet;
      // every heartbeat carries it, so that the next try knows it even after a quick failure.
      let heldAt = earlier?.heldAt ?? Date.now();
      // A heartbeat carries the latest output only (the server keeps the latest details alone).
      const beat = () => ctx.heartbeat({ progress: lastProgress, log: log.latest(LIVE_LOG_CHARS), logChars: log.totalChars, heldAt } satisfies AttemptHeartbeat);
      beat();
      const beating = setInterval(beat, heartbeatEvery(ctx));

      // Cancellation means two things: the workflow cancelled the task (stop the agent), or the
      // worker is going away, or Temporal gave the attempt up (leave the run; it is attached again,
      // or it stops itself once no one holds it).
      const cancel = new AbortController();
      const detach = new AbortController();
      const onCancel = () => {
        if (ctx.cancellationDetails?.cancelRequested) cancel.abort(ctx.cancellationSignal.reason);
        else detach.abort(ctx.cancellationSignal.reason);
      };
      ctx.cancellationSignal.addEventListener('abort', onCancel, { once: true });
      if (ctx.cancellationSignal.aborted) onCancel();
      const onShutdown = () => detach.abort(new Error('the worker is shutting down'));
      deps.shuttingDown?.addEventListener('abort', onShutdown, { once: true });
      if (deps.shuttingDown?.aborted) onShutdown();
      // The run stops at the task's run timeout.
      const deadline = new AbortController();
      const deadlineTimer = setTimeout(
        () => deadline.abort(new Error('run timeout reached')),
        Math.min(Math.max(0, request.runDeadline - Date.now()), 2 ** 31 - 1),
      );
      const signal = AbortSignal.any([cancel.signal, deadline.signal]);

      let prepared = handedOff?.prepared;
      try {
        try {
          prepared ??= deps.runner.prepare ? await deps.runner.prepare({ taskId: request.taskId, hostId: deps.hostId, signal: detach.signal }) : undefined;
        } catch (error) {
          const unheldMs = Date.now() - heldAt;
          if (unheldMs > request.fenceGraceMs) throw runLost(`host ${deps.hostId} unreachable, and the run unheld for ${Math.round(unheldMs / 1000)} s: it has stopped itself (${(error as Error).message})`);
          throw error;
        }
        const context: RunContext = {
          taskId: request.taskId,
          attempt: request.attempt,
          input: request.input,
          hostId: deps.hostId,
          signal,
          runKey: key,
          detach: detach.signal,
          fenceGraceMs: request.fenceGraceMs,
          mayHold: () => !detach.signal.aborted && temporal.reachedWithin(ctx.info.heartbeatTimeoutMs ?? request.fenceGraceMs),
          lastHeldAt: heldAt,
          held: (at) => {
            heldAt = at;
            beat();
          },
          progress: (message) => void (lastProgress = message),
          output: (text) => log.append(text),
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
        if (cancel.signal.aborted) throw ctx.cancellationSignal.reason;
        if (deadline.signal.aborted) return { kind: 'timed_out', attempt: request.attempt, log: log.text(), logChars: log.totalChars };
        if (!result) {
          // Detached (the worker is going away) or cut off from the host: this try ends, and the
          // next one attaches to the same run. Anything else loses the attempt.
          if (detach.signal.aborted || endsTryOnly(runError)) throw runError ?? detach.signal.reason;
          if (runError instanceof ApplicationFailure && runError.nonRetryable) throw runError;
          throw ApplicationFailure.nonRetryable(runError instanceof Error ? runError.message : String(runError), 'run_failed');
        }
        return { kind: 'finished', attempt: request.attempt, result, log: log.text(), logChars: log.totalChars };
      } finally {
        clearTimeout(deadlineTimer);
        clearInterval(beating);
        ctx.cancellationSignal.removeEventListener('abort', onCancel);
        deps.shuttingDown?.removeEventListener('abort', onShutdown);
        prepared?.close();
        release();
      }
    },
  };
}
