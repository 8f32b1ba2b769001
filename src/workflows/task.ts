// The task workflow: one per task. It dispatches the task (SSH host match, then HTTP pull),
// settles every claim, keeps the lease, and records the result. Deterministic code only.
import * as wf from '@temporalio/workflow';
import { ActivityCancellationType, ActivityFailure, isCancellation, TimeoutFailure } from '@temporalio/workflow';
import { TimeoutType } from '@temporalio/common';
import type { AttemptEnd, ClaimGrant, InstanceRef, TaskInput, TaskResult, TaskState, TaskStatus } from '../model';
import { DEFAULT_TASK_OPTIONS, isClosed, MAX_KEPT_ATTEMPTS } from '../model';
import { hostQueue, SA, taskSummary, typeQueue } from '../names';
import type { AttemptActivities, AttemptOutcome, ReportActivities, TaskEvent } from './activity-types';
import type { Rejection } from './claim-rules';
import { attemptsExhausted, checkAssign, checkCancel, checkClaim, checkHolder, describeInstance } from './claim-rules';
import {
  assignUpdate,
  cancelUpdate,
  claimUpdate,
  completeUpdate,
  failUpdate,
  heartbeatUpdate,
  releaseUpdate,
  statusQuery,
} from './messages';

export interface TaskWorkflowArgs {
  taskId: string;
  input: TaskInput;
  /** Set when the workflow continues-as-new: everything it knew, carried over. */
  resume?: { status: TaskStatus; dispatch: number; windowDeadline?: number; unclaimedEnds?: number; redispatchAt?: number };
}

/** SSH attempts that end unclaimed again and again are dispatched again after this backoff. */
const REDISPATCH_BACKOFF_MS = { initial: 1_000, max: 60_000 };

interface OutstandingAttempt {
  dispatch: number;
  scope: wf.CancellationScope;
}

function rejectWith(rejection: Rejection | null): void {
  if (rejection) throw wf.ApplicationFailure.create({ type: rejection.code, message: rejection.message, nonRetryable: true });
}

export async function taskWorkflow(args: TaskWorkflowArgs): Promise<TaskStatus> {
  const iso = (ms: number = Date.now()) => new Date(ms).toISOString();
  const options = { ...DEFAULT_TASK_OPTIONS, ...args.input.options };
  const status: TaskStatus = args.resume?.status ?? {
    taskId: args.taskId,
    input: args.input,
    options,
    state: 'pending',
    mode: 'undecided',
    attempt: 0,
    lostAttempts: 0,
    cancelRequested: false,
    createdAt: iso(),
    updatedAt: iso(),
    attempts: [],
  };
  /** Bumped for every SSH attempt scheduled; a claim must name the current one. */
  let dispatch = args.resume?.dispatch ?? 0;
  /** The dispatch whose attempt holds the task while it runs on an SSH host. */
  let claimedDispatch: number | undefined;
  /** The workflow task (by history length) in which that claim was granted. */
  let claimedInTask: number | undefined;
  /** When phase 1 (host match) of the current attempt ends. */
  let windowDeadline = args.resume?.windowDeadline;
  /** SSH attempts in a row that ended before any claim (declined, failed, rejected) while the task waited. */
  let unclaimedEnds = args.resume?.unclaimedEnds ?? 0;
  /** While set, the next SSH attempt waits until then: a host that keeps failing is not a hot loop. */
  let redispatchAt = args.resume?.redispatchAt;
  let outstanding: OutstandingAttempt | undefined;
  const attemptEnds: Array<{ dispatch: number; outcome?: AttemptOutcome; error?: unknown }> = [];
  let dirty = false;
  const touch = () => {
    status.updatedAt = iso();
    dirty = true;
  };

  // Reports go out in the background and are retried without limit: a Forgejo outage delays a
  // comment but never loses it and never fails the task. The workflow waits for them before closing.
  const reports = wf.proxyActivities<ReportActivities>({
    startToCloseTimeout: '1 minute',
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '5 minutes' },
  });
  let reportsInFlight = 0;
  /** Set by a cancel requested through Temporal once the task is closed: stop waiting for reports. */
  let reportsAbandoned = false;
  function report(type: TaskEvent['type']): void {
    const snapshot: TaskStatus = { ...status, attempts: status.attempts.map((a) => ({ ...a, logTail: undefined })) };
    reportsInFlight += 1;
    // Not cancellable: a cancel requested through Temporal must not drop a report on its way.
    void wf.CancellationScope.nonCancellable(() => reports.reportTaskEvent({ type, status: snapshot }))
      .catch(() => undefined)
      .finally(() => {
        reportsInFlight -= 1;
        dirty = true; // a continue-as-new may have been waiting for it
      });
  }

  const currentAttempt = () => status.attempts[status.attempts.length - 1];

  function close(state: TaskState, result?: TaskResult): void {
    status.state = state;
    if (result) status.result = result;
    status.closedAt = iso();
    status.leaseExpiresAt = undefined;
    touch();
  }

  function endAttempt(end: AttemptEnd, reason?: string): void {
    const record = currentAttempt();
    if (record && record.end === 'running') {
      record.end = end;
      record.endedAt = iso();
      if (reason) record.reason = reason;
    }
  }

  /** The holder finished (or gave up): close with its result, unless a cancel came first. */
  function finish(result: TaskResult): void {
    endAttempt(result.outcome === 'fail' ? 'failed' : 'completed', result.outcome === 'fail' ? result.summary : undefined);
    if (status.cancelRequested) close('cancelled', result);
    else close(result.outcome === 'fail' ? 'failed' : 'completed', result);
  }

  function resetBackoff(): void {
    unclaimedEnds = 0;
    redispatchAt = undefined;
  }

  /** Back to pending/undecided for a fresh dispatch. */
  function requeue(): void {
    status.state = 'pending';
    status.mode = 'undecided';
    status.assignee = undefined;
    status.reservedFor = undefined;
    status.leaseExpiresAt = undefined;
    claimedDispatch = undefined;
    windowDeadline = undefined;
    resetBackoff();
    touch();
  }

  /** The holder lost the task without a result: count it, then dispatch again or give up. */
  function loseAttempt(end: AttemptEnd, reason: string): void {
    endAttempt(end, reason);
    if (status.cancelRequested) {
      close('cancelled');
      return;
    }
    status.lostAttempts += 1;
    if (attemptsExhausted(status)) {
      close('failed', { outcome: 'fail', summary: `gave up after ${status.lostAttempts} lost attempts; last: ${reason}` });
    } else {
      requeue();
    }
  }

  function cancelOutstanding(): void {
    outstanding?.scope.cancel();
    outstanding = undefined;
  }

  function scheduleSshAttempt(host: InstanceRef | undefined): void {
    dispatch += 1;
    const myDispatch = dispatch;
    const now = Date.now();
    if (!host && windowDeadline === undefined) windowDeadline = now + options.matchWindowMs;
    const activities = wf.proxyActivities<AttemptActivities>({
      taskQueue: host ? hostQueue(host.id) : typeQueue(status.input.agentType),
      // Phase 1's window is the schedule-to-start timeout: Temporal's matching is the host match.
      // An assigned task waits on its host's own queue for as long as the host needs to free a slot.
      scheduleToStartTimeout: host ? undefined : Math.max(1, (windowDeadline ?? now) - now),
      startToCloseTimeout: options.runTimeoutMs,
      heartbeatTimeout: options.sshHeartbeatTimeoutMs,
      retry: { maximumAttempts: 1 },
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
    });
    const scope = new wf.CancellationScope();
    outstanding = { dispatch: myDispatch, scope };
    scope
      .run(() => activities.runAttempt({ taskId: status.taskId, agentType: status.input.agentType, dispatch: myDispatch }))
      .then(
        (outcome) => attemptEnds.push({ dispatch: myDispatch, outcome }),
        (error: unknown) => attemptEnds.push({ dispatch: myDispatch, error }),
      )
      .finally(() => {
        dirty = true;
      });
  }

  function isScheduleToStartTimeout(error: unknown): boolean {
    return (
      error instanceof ActivityFailure &&
      error.cause instanceof TimeoutFailure &&
      error.cause.timeoutType === TimeoutType.SCHEDULE_TO_START
    );
  }

  /**
   * The attempt was taken off the queue by a host that then went silent before it claimed: a worker
   * that died with it in hand, or one whose poll its own shutdown cut off just as the task reached it
   * (Temporal then counts the task started, and only the heartbeat timeout ends it).
   */
  function isSilentHostTimeout(error: unknown): boolean {
    return (
      error instanceof ActivityFailure &&
      error.cause instanceof TimeoutFailure &&
      error.cause.timeoutType !== TimeoutType.SCHEDULE_TO_START
    );
  }

  function describeError(error: unknown): string {
    if (error instanceof ActivityFailure && error.cause) return error.cause.message || String(error.cause);
    return error instanceof Error ? error.message : String(error);
  }

  function onAttemptEnd(end: { dispatch: number; outcome?: AttemptOutcome; error?: unknown }): void {
    if (outstanding?.dispatch === end.dispatch) outstanding = undefined;
    if (status.state === 'running' && status.mode === 'ssh_cli' && claimedDispatch === end.dispatch) {
      // The attempt that holds the task has ended.
      if (end.outcome?.kind === 'finished') {
        const record = currentAttempt();
        if (record && end.outcome.log) record.logTail = end.outcome.log;
        finish(end.outcome.result);
      }
      else if (status.cancelRequested) {
        // However the runner stopped (cancellation, or the killed process's error), it was the cancel.
        endAttempt('cancelled', end.error && !isCancellation(end.error) ? describeError(end.error) : undefined);
        close('cancelled');
      } else if (claimedInTask === wf.workflowInfo().historyLength) {
        // The claim and the attempt's end reached the workflow in one workflow task (Updates are
        // applied first): the attempt had ended before its claim was answered, so it never ran the
        // agent. Not a lost attempt: dispatched again, as a released one would be.
        endAttempt('released', `the SSH attempt ended before its claim was answered: ${end.error ? describeError(end.error) : 'no result'}`);
        requeue();
      } else loseAttempt('lost', end.error ? describeError(end.error) : 'SSH attempt ended without a result');
      return;
    }
    if (status.state !== 'pending' || end.dispatch !== dispatch) return; // an attempt we already moved past
    if (isScheduleToStartTimeout(end.error) && !status.reservedFor) {
      // Phase 2: no host took the task within the window.
      status.mode = 'http_pull';
      touch();
      return;
    }
    // A host was found, and lost, as when a claimed attempt's host is lost: the task gets a fresh
    // match window (nothing ran, so nothing counts as lost). Otherwise the window the silent host
    // sat on would pass, and the task would fall back to pull agents while hosts stand idle.
    if (isSilentHostTimeout(end.error)) windowDeadline = undefined;
    // Otherwise (declined, lost, or failed before claiming) the main loop dispatches again: at once
    // the first time (another host, or a slot freed meanwhile), then with a growing backoff, so that
    // a host that keeps failing (above all one the task is reserved for) is not a hot loop. A host
    // that was full or offline is no failure: it polls again only once it can run the task.
    if (end.outcome?.kind === 'declined' && end.outcome.busy) return;
    unclaimedEnds += 1;
    if (unclaimedEnds >= 2) {
      redispatchAt = Date.now() + Math.min(REDISPATCH_BACKOFF_MS.initial * 2 ** (unclaimedEnds - 2), REDISPATCH_BACKOFF_MS.max);
    }
  }

  function wantsSshAttempt(): boolean {
    if (status.state !== 'pending' || status.cancelRequested || outstanding) return false;
    if (status.reservedFor) return status.reservedFor.kind === 'host';
    return status.mode === 'undecided';
  }

  function historyFull(): boolean {
    const info = wf.workflowInfo();
    return info.continueAsNewSuggested || info.historyLength >= options.maxHistoryEvents;
  }

  // ---- messages -------------------------------------------------------------------------------

  wf.setHandler(statusQuery, () => status);

  wf.setHandler(
    claimUpdate,
    ({ claimant, dispatch: claimDispatch }): ClaimGrant => {
      status.attempt += 1;
      const holder: InstanceRef = { kind: claimant.kind, id: claimant.id };
      const now = Date.now();
      status.state = 'running';
      status.mode = claimant.kind === 'host' ? 'ssh_cli' : 'http_pull';
      status.assignee = holder;
      status.reservedFor = undefined;
      status.claimedAt = iso(now);
      status.leaseExpiresAt = claimant.kind === 'agent' ? iso(now + options.leaseMs) : undefined;
      status.attempts.push({ attempt: status.attempt, holder, mode: status.mode, claimedAt: iso(now), end: 'running' });
      if (status.attempts.length > MAX_KEPT_ATTEMPTS) {
        const omitted = status.attempts.splice(0, status.attempts.length - MAX_KEPT_ATTEMPTS).length;
        status.attemptsOmitted = (status.attemptsOmitted ?? 0) + omitted;
      }
      resetBackoff();
      report('started');
      if (claimant.kind === 'host') {
        claimedDispatch = claimDispatch;
        claimedInTask = wf.workflowInfo().historyLength;
      } else {
        // A pull agent won: the SSH attempt still scheduled for this task lost.
        cancelOutstanding();
      }
      touch();
      return { taskId: status.taskId, attempt: status.attempt, leaseExpiresAt: status.leaseExpiresAt, input: status.input };
    },
    { validator: ({ claimant, dispatch: claimDispatch }) => rejectWith(checkClaim(status, claimant, claimDispatch, outstanding?.dispatch ?? -1)) },
  );

  wf.setHandler(
    heartbeatUpdate,
    () => {
      // No wake-up: the lease timer re-arms itself when it fires early, which keeps history small;
      // only a history due for continue-as-new wakes the main loop.
      status.leaseExpiresAt = iso(Date.now() + options.leaseMs);
      if (historyFull()) dirty = true;
      return { leaseExpiresAt: status.leaseExpiresAt, cancelRequested: status.cancelRequested };
    },
    { validator: ({ holder, attempt }) => rejectWith(checkHolder(status, holder, attempt)) },
  );

  wf.setHandler(
    completeUpdate,
    ({ result }) => {
      finish(result);
      return status;
    },
    { validator: ({ holder, attempt }) => rejectWith(checkHolder(status, holder, attempt)) },
  );

  wf.setHandler(
    failUpdate,
    ({ summary, details }) => {
      finish({ outcome: 'fail', summary, details });
      return status;
    },
    { validator: ({ holder, attempt }) => rejectWith(checkHolder(status, holder, attempt)) },
  );

  wf.setHandler(
    releaseUpdate,
    () => {
      endAttempt('released', 'given back by its holder');
      if (status.cancelRequested) close('cancelled');
      else requeue();
      return status;
    },
    { validator: ({ holder, attempt }) => rejectWith(checkHolder(status, holder, attempt)) },
  );

  wf.setHandler(
    assignUpdate,
    ({ target }) => {
      status.reservedFor = { kind: target.kind, id: target.id };
      status.mode = target.kind === 'host' ? 'ssh_cli' : 'http_pull';
      // The attempt scheduled on the type's queue must not run now: the host's own queue takes over.
      cancelOutstanding();
      resetBackoff(); // a new target gets its first try at once
      touch();
      return status;
    },
    { validator: ({ target }) => rejectWith(checkAssign(status, target)) },
  );

  function requestCancel(): void {
    status.cancelRequested = true;
    if (status.state === 'pending') {
      cancelOutstanding();
      close('cancelled');
    } else if (status.mode === 'ssh_cli') {
      // Reaches the runner as activity cancellation: the remote process is killed.
      outstanding?.scope.cancel();
    }
    // A pull agent learns of it from its next heartbeat answer; its lease bounds the wait.
    touch();
  }

  wf.setHandler(
    cancelUpdate,
    (_request) => {
      requestCancel();
      return status;
    },
    { validator: (_request) => rejectWith(checkCancel(status)) },
  );

  // A cancel requested through Temporal (the Web UI, the CLI) is the same cancel: the task ends
  // `cancelled` once its runner has stopped, with its report and search attributes, rather than the
  // workflow stopping where it stands. Hence the rest runs in a scope that Temporal does not cancel.
  // Once the task is closed, such a cancel is an operator's way out of a report that cannot be
  // delivered: the run ends without waiting for it.
  wf.CancellationScope.current().cancelRequested.catch(() => {
    if (isClosed(status.state)) reportsAbandoned = true;
    else if (!status.cancelRequested) requestCancel();
  });

  // ---- main loop ------------------------------------------------------------------------------

  let published = '';
  function publish(): void {
    const holderOrReserved = status.assignee ?? status.reservedFor;
    const key = [status.state, status.mode, holderOrReserved?.id ?? ''].join('|');
    if (key === published) return;
    published = key;
    wf.upsertSearchAttributes([
      { key: SA.state, value: status.state },
      { key: SA.mode, value: status.mode },
      { key: SA.assignee, value: holderOrReserved ? holderOrReserved.id : null },
    ]);
    const who = holderOrReserved ? ` · ${describeInstance(holderOrReserved)}` : '';
    const attempt = status.attempt > 0 ? ` · attempt ${status.attempt}` : '';
    // A run started by continue-as-new has no static summary: its details carry it.
    const summary = args.resume ? `${taskSummary(status.input)}\n\n` : '';
    wf.setCurrentDetails(`${summary}**${status.state}** (${status.mode})${who}${attempt}${status.result ? ` · ${status.result.outcome}: ${status.result.summary}` : ''}`);
  }

  return wf.CancellationScope.nonCancellable(async () => {
    while (!isClosed(status.state)) {
      if (wantsSshAttempt()) {
        if (!status.reservedFor && windowDeadline !== undefined && Date.now() >= windowDeadline) {
          status.mode = 'http_pull'; // the window passed while attempts were being declined
          touch();
        } else if (redispatchAt === undefined || Date.now() >= redispatchAt) {
          redispatchAt = undefined;
          scheduleSshAttempt(status.reservedFor);
        }
      }
      publish();
      dirty = false;
      const leaseLeft =
        status.state === 'running' && status.mode === 'http_pull' && status.leaseExpiresAt
          ? Math.max(1, Date.parse(status.leaseExpiresAt) - Date.now())
          : undefined;
      // Backing off before the next SSH attempt: wake when it is due, or when the window ends first.
      const backoffUntil =
        redispatchAt !== undefined && wantsSshAttempt()
          ? Math.min(redispatchAt, !status.reservedFor && windowDeadline !== undefined ? windowDeadline : redispatchAt)
          : undefined;
      const backoffLeft = backoffUntil !== undefined ? Math.max(1, backoffUntil - Date.now()) : undefined;
      const wakeIn = leaseLeft ?? backoffLeft;
      if (wakeIn === undefined) await wf.condition(() => dirty);
      else await wf.condition(() => dirty, wakeIn);

      while (attemptEnds.length > 0) onAttemptEnd(attemptEnds.shift()!);
      if (
        status.state === 'running' &&
        status.mode === 'http_pull' &&
        status.leaseExpiresAt &&
        Date.now() >= Date.parse(status.leaseExpiresAt)
      ) {
        loseAttempt('lease_lapsed', `lease of ${describeInstance(status.assignee!)} lapsed`);
      }

      // Not while an activity is in flight: continuing as new would abandon it.
      if (!isClosed(status.state) && !outstanding && reportsInFlight === 0 && historyFull()) {
        // Long-held tasks (many heartbeats) start a fresh history, carrying everything over.
        await wf.condition(wf.allHandlersFinished);
        publish();
        await wf.continueAsNew<typeof taskWorkflow>({
          taskId: args.taskId,
          input: args.input,
          resume: { status, dispatch, windowDeadline, unclaimedEnds, redispatchAt },
        });
      }
    }

    cancelOutstanding();
    publish();
    report(
      status.state === 'cancelled' ? 'cancelled' : status.result?.outcome === 'success' ? 'succeeded' : status.result?.outcome === 'fork' ? 'forked' : 'failed',
    );
    await wf.condition(() => reportsInFlight === 0 || reportsAbandoned);
    await wf.condition(wf.allHandlersFinished);
    return status;
  });
}
