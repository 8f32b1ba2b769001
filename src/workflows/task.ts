// The task workflow: one per task. A thin shell around the task's state machine
// (task-machine.ts): it hands the machine every message, attempt end and timer, and carries out
// what the machine asks for — SSH attempts on the right queue, their cancellation, reports —
// plus what only a workflow can do: search attributes, continue-as-new. Deterministic code only.
import * as wf from '@temporalio/workflow';
import { ActivityCancellationType, ActivityFailure, isCancellation, TimeoutFailure } from '@temporalio/workflow';
import { TimeoutType } from '@temporalio/common';
import type { TaskInput, TaskStatus } from '../model';
import { agentPullQueue, hostQueue, pullQueue, runQueue, SA, taskSummary, typeQueue } from '../names';
import { RUN_LOST, type AttemptActivities, type AttemptOutcome, type OfferActivities, type OfferOutcome, type ReportActivities, type TaskEvent } from './activity-types';
import type { Rejection } from './claim-rules';
import { describeInstance } from './claim-rules';
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
import { taskPriority } from './priority';
import type { AttemptError, PullOffer, SshDispatch, SshRun, TaskMachineState } from './task-machine';
import { TaskMachine } from './task-machine';
import { InOrder } from './in-order';
import { LEGACY_TASK_TALLY_WORKFLOW_ID, TASK_TALLY_PATCH, taskTransitionSignal } from './task-tally';
import { newTaskPlace, placeKey, taskPlace } from './task-tally-book';

/**
 * Pull offers (activities on the pull queues) came with this patch: histories from before it have
 * none, and replay without them.
 */
export const PULL_OFFERS_PATCH = 'pull-offers';

/** A lease lapse noticed late (an outage) got one more lease with this patch (TaskMachine.expire). */
export const LATE_WAKE_GRACE_PATCH = 'late-wake-grace';

/**
 * A pull agent's lapsed attempt stays open to its holder's late heartbeat or result until another
 * attempt starts, and the task waits `lapseGraceMs` before it goes on (TaskMachine.expire). Checked
 * only when a lease lapses, so that only histories with a lapse carry the marker.
 */
export const LAPSE_GRACE_PATCH = 'lapse-grace';

/** Reports (comments, callbacks) go out one after another, in the order of their events, with this patch. */
export const ORDERED_REPORTS_PATCH = 'ordered-reports';

/**
 * The task tally hears where the task is from a tellTaskTally activity per move, in order, rather
 * than from a signal the workflow sends, and of a new task only once it has been pending for
 * NEW_TASK_TALLY_DELAY_MS (a task claimed sooner is first told running). The signal sent as the
 * task started woke the workflow for one more workflow task just as a waiting agent's claim
 * arrived, which waited for it (cross-process enqueue → dequeue p50 149 → 104 ms, p99 194 → 132 ms
 * without the signals, `BENCH_ONLY=pull npm run bench`). Runs from before it keep signalling.
 */
export const TALLY_BY_ACTIVITIES_PATCH = 'tally-by-activities';

/** A new task is told to the tally once it has been pending this long (stats lag new tasks by this). */
export const NEW_TASK_TALLY_DELAY_MS = 2_000;

export interface TaskWorkflowArgs {
  taskId: string;
  input: TaskInput;
  /** Set when the workflow continues-as-new: everything it knew, carried over. */
  resume?: TaskMachineState;
}

function rejectWith(rejection: Rejection | null): void {
  if (rejection) throw wf.ApplicationFailure.create({ type: rejection.code, message: rejection.message, nonRetryable: true });
}

/** How an SSH attempt's activity failed, in the machine's terms. */
function attemptError(error: unknown): AttemptError {
  const message = error instanceof ActivityFailure && error.cause ? error.cause.message || String(error.cause) : error instanceof Error ? error.message : String(error);
  if (error instanceof ActivityFailure && error.cause instanceof TimeoutFailure) {
    const type = error.cause.timeoutType;
    if (type === TimeoutType.SCHEDULE_TO_START) return { kind: 'not_started', message };
    if (type === TimeoutType.START_TO_CLOSE) return { kind: 'run_timeout', message };
    return { kind: 'silent', message };
  }
  if (isCancellation(error)) return { kind: 'cancelled', message };
  return { kind: 'failed', message };
}

export async function taskWorkflow(args: TaskWorkflowArgs): Promise<TaskStatus> {
  const info = wf.workflowInfo();
  const machine = args.resume ? TaskMachine.resume(args.resume) : TaskMachine.create(args.taskId, args.input, Date.now(), info.firstExecutionRunId);
  const status = machine.status;
  const options = status.options;

  /** Set whenever the main loop has something to look at. */
  let dirty = false;
  const attemptScopes = new Map<number, wf.CancellationScope>();
  const attemptEnds: Array<{ dispatch: number; outcome?: AttemptOutcome; error?: unknown }> = [];
  const offerScopes = new Map<number, wf.CancellationScope>();
  const offerEnds: Array<{ offer: number; outcome?: OfferOutcome; error?: string }> = [];
  const priority = taskPriority(status.input);
  // Decided once per run, before any command: a run keeps one way of telling the tally.
  const tallyByActivities = wf.patched(TALLY_BY_ACTIVITIES_PATCH);
  /** Where the tally was last told the task is. */
  let toldPlace = '';
  /**
   * A new task still where it started is told only once NEW_TASK_TALLY_DELAY_MS has passed (a run
   * started by continue-as-new restates at once): one timer, cancelled once the tally has been told.
   */
  let newTaskDelayed = tallyByActivities && !args.resume;
  const newTaskDelay = new wf.CancellationScope();
  if (newTaskDelayed) {
    newTaskDelay
      .run(() => wf.sleep(NEW_TASK_TALLY_DELAY_MS))
      .then(() => {
        newTaskDelayed = false;
        dirty = true;
      })
      .catch(() => undefined); // cancelled: told already
  }
  const newTask = placeKey(newTaskPlace(status.input.agentType));
  // A continue-as-new or the close may be waiting for a tell or a report to end.
  const tallySends = new InOrder(() => (dirty = true));
  const reportSends = new InOrder(() => (dirty = true));
  /** Tells the tally where the task now is, after the tells before (not behind the reports: a stuck comment must not hold the counts up). */
  function tellTally(): void {
    if (!tallyByActivities) return; // publish() signals it
    const place = taskPlace(status);
    if (placeKey(place) === toldPlace || (newTaskDelayed && placeKey(place) === newTask)) return;
    if (newTaskDelayed) {
      newTaskDelayed = false;
      newTaskDelay.cancel();
    }
    toldPlace = placeKey(place);
    tallySends.send(() => tallyTells.tellTaskTally({ taskId: status.taskId, to: place }));
  }

  // Reports go out in the background and are retried without limit: a Forgejo outage delays a
  // comment but never loses it and never fails the task. The workflow waits for them before closing.
  const reports = wf.proxyActivities<ReportActivities>({
    startToCloseTimeout: '1 minute',
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '5 minutes' },
  });
  // The tally is best-effort: a tell it cannot take within 10 minutes is given up (an open task's
  // next tell mends it), so that a tally in trouble never holds a task's close for long.
  const tallyTells = wf.proxyActivities<Pick<ReportActivities, 'tellTaskTally'>>({
    startToCloseTimeout: '1 minute',
    scheduleToCloseTimeout: '10 minutes',
    retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds' },
  });
  /** Set by a cancel requested through Temporal once the task is closed: stop waiting for reports. */
  let reportsAbandoned = false;
  /** Sends a report after the ones before it, so that events arrive in order. */
  function report(type: TaskEvent['type']): void {
    const snapshot: TaskStatus = { ...status, attempts: status.attempts.map((a) => ({ ...a, logTail: undefined })) };
    // Before the patch, reports went out side by side (a `started` could arrive after `forked`).
    reportSends.send(() => reports.reportTaskEvent({ type, status: snapshot }), wf.patched(ORDERED_REPORTS_PATCH));
  }

  function scheduleSshAttempt(next: SshDispatch): void {
    const activities = wf.proxyActivities<AttemptActivities>({
      taskQueue: next.host ? hostQueue(next.host.id) : typeQueue(status.input.agentType),
      // Phase 1's window is the schedule-to-start timeout: Temporal's matching is the host match.
      // An assigned task waits on its host's own queue for as long as the host needs to free a slot.
      scheduleToStartTimeout: next.scheduleToStartMs,
      startToCloseTimeout: options.runTimeoutMs,
      heartbeatTimeout: options.sshHeartbeatTimeoutMs,
      retry: { maximumAttempts: 1 },
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      priority,
    });
    trackAttempt(next.dispatch, () => activities.runAttempt({ taskId: status.taskId, agentType: status.input.agentType, dispatch: next.dispatch }));
  }

  function trackAttempt(dispatch: number, run: () => Promise<AttemptOutcome>): void {
    const scope = new wf.CancellationScope();
    attemptScopes.set(dispatch, scope);
    scope
      .run(run)
      .then(
        (outcome) => attemptEnds.push({ dispatch, outcome }),
        (error: unknown) => attemptEnds.push({ dispatch, error }),
      )
      .finally(() => {
        attemptScopes.delete(dispatch);
        dirty = true;
      });
  }

  /**
   * Offers the task to pull agents: an activity on the type's pull queue (or the reserved agent's
   * own), which only an API process with a suitable agent waiting polls. An API process that gets
   * it after its agent left gives it back (OFFER_RETURNED) and Temporal offers it again at once.
   */
  function scheduleOffer(next: PullOffer): void {
    const activities = wf.proxyActivities<OfferActivities>({
      taskQueue: next.agentId ? agentPullQueue(next.agentId) : pullQueue(status.input.agentType),
      // The offer waits in the queue for as long as the task is pending: no schedule-to-start limit.
      startToCloseTimeout: '1 minute',
      retry: { initialInterval: '100 milliseconds', backoffCoefficient: 2, maximumInterval: '5 seconds' },
      // A withdrawn offer must not hold the task up: it is gone from the queue at once, and one an
      // API process is claiming with loses its claim in the validator.
      cancellationType: ActivityCancellationType.TRY_CANCEL,
      priority,
    });
    const scope = new wf.CancellationScope();
    offerScopes.set(next.offer, scope);
    scope
      .run(() => activities.offerTask({ taskId: status.taskId, agentType: status.input.agentType, offer: next.offer, ...(next.agentId ? { agentId: next.agentId } : {}) }))
      .then(
        (outcome) => offerEnds.push({ offer: next.offer, outcome }),
        (error: unknown) => offerEnds.push({ offer: next.offer, error: error instanceof Error ? error.message : String(error) }),
      )
      .finally(() => {
        offerScopes.delete(next.offer);
        dirty = true;
      });
  }

  /** The run of a claimed SSH attempt, on the host's own queue: retried there, so that a restarted worker attaches to it again. */
  function scheduleSshRun(next: SshRun): void {
    const activities = wf.proxyActivities<AttemptActivities>({
      taskQueue: runQueue(next.hostId),
      // A try that no worker of the host takes within the fence grace finds the run stopped: lost.
      scheduleToStartTimeout: options.fenceGraceMs,
      // Backstops only: the activity stops the run at its deadline itself.
      startToCloseTimeout: options.runTimeoutMs + options.fenceGraceMs,
      scheduleToCloseTimeout: options.runTimeoutMs + 2 * options.fenceGraceMs,
      heartbeatTimeout: options.sshHeartbeatTimeoutMs,
      retry: { initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '10 seconds', maximumAttempts: 20, nonRetryableErrorTypes: [RUN_LOST] },
      cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
      priority,
    });
    const request = {
      taskId: status.taskId,
      runId: status.runId,
      dispatch: next.dispatch,
      attempt: next.attempt,
      input: status.input,
      fenceGraceMs: options.fenceGraceMs,
      runDeadline: next.runDeadline,
    };
    trackAttempt(next.dispatch, () => activities.runClaimed(request));
  }

  /** Carries out what the machine asked for since the last call. */
  function applyEffects(): void {
    for (const effect of machine.takeEffects()) {
      if (effect.type === 'report') report(effect.event);
      else if (effect.type === 'withdrawOffer') offerScopes.get(effect.offer)?.cancel();
      else attemptScopes.get(effect.dispatch)?.cancel();
    }
  }

  /** Runs a transition of the machine, then its effects. */
  function transition<R>(apply: (now: number) => R): R {
    const result = apply(Date.now());
    applyEffects();
    return result;
  }

  /** A message's transition: the main loop then looks at the task again. */
  function onMessage<R>(apply: (now: number) => R): R {
    const result = transition(apply);
    dirty = true;
    return result;
  }

  /** Not memoized: a run from before the patch offers too once it replays past its history. */
  function offersEnabled(): boolean {
    return wf.patched(PULL_OFFERS_PATCH);
  }

  function historyFull(): boolean {
    const now = wf.workflowInfo();
    return now.continueAsNewSuggested || now.historyLength >= options.maxHistoryEvents;
  }

  // ---- messages -------------------------------------------------------------------------------

  wf.setHandler(statusQuery, () => status);

  wf.setHandler(
    claimUpdate,
    (request) =>
      onMessage((now) => {
        return machine.claim(request, now);
      }),
    { validator: (request) => rejectWith(machine.validateClaim(request)) },
  );

  wf.setHandler(
    heartbeatUpdate,
    (request) => {
      // No wake-up: the lease timer re-arms itself when it fires early, which keeps history small;
      // only a heartbeat that took a lapsed attempt back, or a history due for continue-as-new,
      // wakes the main loop.
      const wasRunning = status.state === 'running';
      const answer = transition((now) => machine.heartbeat(request, now));
      if (!wasRunning || historyFull()) dirty = true;
      return answer;
    },
    { validator: (request) => rejectWith(machine.validateHolder(request, Date.now())) },
  );

  wf.setHandler(completeUpdate, (request) => onMessage((now) => machine.complete(request, now)), {
    validator: (request) => rejectWith(machine.validateHolder(request, Date.now())),
  });

  wf.setHandler(failUpdate, (request) => onMessage((now) => machine.fail(request, now)), {
    validator: (request) => rejectWith(machine.validateHolder(request, Date.now())),
  });

  wf.setHandler(releaseUpdate, (request) => onMessage((now) => machine.release(request, now)), {
    validator: (request) => rejectWith(machine.validateHolder(request, Date.now())),
  });

  wf.setHandler(assignUpdate, (request) => onMessage((now) => machine.assign(request, now)), {
    validator: (request) => rejectWith(machine.validateAssign(request)),
  });

  wf.setHandler(cancelUpdate, (request) => onMessage((now) => machine.cancel(request, now)), {
    validator: (_request) => rejectWith(machine.validateCancel()),
  });

  // A cancel requested through Temporal (the Web UI, the CLI) is the same cancel: the task ends
  // `cancelled` once its runner has stopped, with its report and search attributes, rather than the
  // workflow stopping where it stands. Hence the rest runs in a scope that Temporal does not cancel.
  // Once the task is closed, such a cancel is an operator's way out of a report that cannot be
  // delivered: the run ends without waiting for it.
  wf.CancellationScope.current().cancelRequested.catch(() => {
    if (machine.closed) reportsAbandoned = true;
    else if (!status.cancelRequested) onMessage((now) => machine.cancel({ reason: 'cancel requested through Temporal', by: 'temporal' }, now));
  });

  // ---- main loop ------------------------------------------------------------------------------

  let published = '';
  function publish(): void {
    const holderOrReserved = status.assignee ?? status.reservedFor;
    const key = [status.state, status.mode, holderOrReserved?.id ?? ''].join('|');
    if (key === published) return;
    const previous = published;
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

    // The task tally (./task-tally.ts) counts tasks by state × type × mode for the stats: tell it
    // where the task is now, when its state or mode changed. A run's first publish always does: a
    // new task gets counted, and a run started by continue-as-new restates where the task is, in
    // case the previous run's last signal was dropped (the server drops a signal sent in the
    // workflow task that ends the run). The tally keeps open tasks by id: a restated place is not
    // counted twice. Patched: histories from before the tally replay without the signal.
    if (tallyByActivities) return; // told by tellTally()
    const [wasState, wasMode] = previous.split('|');
    if ((previous === '' || wasState !== status.state || wasMode !== status.mode) && wf.patched(TASK_TALLY_PATCH)) {
      const type = status.input.agentType;
      const transition = {
        taskId: status.taskId,
        ...(previous === '' ? {} : { from: { state: wasState!, type, mode: wasMode! } }),
        to: { state: status.state, type, mode: status.mode },
      };
      // Waited for like a report: the task closes, or continues-as-new, only once the tally has it.
      reportSends.inFlight += 1;
      void wf.CancellationScope.nonCancellable(() => wf.getExternalWorkflowHandle(LEGACY_TASK_TALLY_WORKFLOW_ID).signal(taskTransitionSignal, [transition]))
        // No tally (nobody has asked for the stats yet, or it was terminated): never the task's concern.
        .catch(() => undefined)
        .finally(() => {
          reportSends.inFlight -= 1;
          if (historyFull()) dirty = true; // a continue-as-new may be waiting for it
        });
    }
  }

  return wf.CancellationScope.nonCancellable(async () => {
    while (!machine.closed) {
      const next = machine.dueSshDispatch(Date.now());
      if (next) scheduleSshAttempt(next);
      const run = machine.dueSshRun();
      if (run) scheduleSshRun(run);
      if (offersEnabled()) {
        const offer = machine.dueOffer(Date.now());
        if (offer) scheduleOffer(offer);
      }
      publish();
      tellTally();
      dirty = false;
      const wakeAt = machine.wakeAt();
      if (wakeAt === undefined) await wf.condition(() => dirty);
      else await wf.condition(() => dirty, Math.max(1, wakeAt - Date.now()));

      while (attemptEnds.length > 0) {
        const end = attemptEnds.shift()!;
        transition((now) => machine.attemptEnded({ dispatch: end.dispatch, outcome: end.outcome, error: end.error === undefined ? undefined : attemptError(end.error) }, now));
      }
      while (offerEnds.length > 0) {
        const end = offerEnds.shift()!;
        transition((now) => machine.offerEnded(end, now));
      }
      transition((now) => machine.expire(now, { lateWakeGrace: wf.patched(LATE_WAKE_GRACE_PATCH), lapseGrace: () => wf.patched(LAPSE_GRACE_PATCH) }));

      // Not while an activity is in flight: continuing as new would abandon it.
      if (!machine.closed && !machine.attemptInFlight && reportSends.inFlight === 0 && tallySends.inFlight === 0 && historyFull()) {
        // Long-held tasks (many heartbeats) start a fresh history, carrying everything over. The
        // offer of a pending one is withdrawn: the next run offers the task anew.
        transition(() => machine.withdrawOffer());
        await wf.condition(wf.allHandlersFinished);
        publish(); // the next run tells the tally where the task is
        await wf.continueAsNew<typeof taskWorkflow>({ taskId: args.taskId, input: args.input, resume: machine.snapshot() });
      }
    }

    transition(() => machine.cancelOutstanding());
    publish();
    tellTally();
    report(machine.closingEvent());
    // A cancel through Temporal is the way out of tally tells too.
    await wf.condition(() => (tallySends.inFlight === 0 && reportSends.inFlight === 0) || reportsAbandoned);
    await wf.condition(wf.allHandlersFinished);
    return status;
  });
}
