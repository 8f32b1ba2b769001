// The task's state machine: every transition of a task, as plain data and pure functions of the
// time it is given. The workflow (task.ts) is a thin shell around it: it feeds the machine
// messages, attempt ends and timer wake-ups, and carries out what the machine asks for (schedule
// an SSH attempt, cancel one, report an event). Unit tests drive it without a server.
// Deterministic code only: imported by workflow code.
import type { AttemptEnd, ClaimGrant, HeartbeatAnswer, InstanceRef, TaskInput, TaskResult, TaskState, TaskStatus } from '../model';
import { DEFAULT_TASK_OPTIONS, isClosed, MAX_KEPT_ATTEMPTS } from '../model';
import type { AttemptOutcome, OfferOutcome, TaskEvent } from './activity-types';
import type { Rejection } from './claim-rules';
import { attemptsExhausted, checkAssign, checkCancel, checkClaim, checkHolder, describeInstance, type LapsedAttempt } from './claim-rules';
import type { AssignRequest, CancelRequest, ClaimRequest, CompleteRequest, FailRequest, HolderRequest } from './messages';

/** The latest output of a pull agent the task keeps (its status, and so every query, carries it). */
export const PULL_LOG_CHARS = 16 * 1024;

/**
 * A lease timer that fires this much later than the lease's end did not fire on time: Temporal or
 * every workflow worker was down, and no heartbeat or report could reach the task meanwhile.
 */
export const LATE_WAKE_MS = 5_000;

/** SSH attempts that end unclaimed again and again are dispatched again after this backoff. */
export const REDISPATCH_BACKOFF_MS = { initial: 1_000, max: 60_000 } as const;

/** Everything a task knows, carried over when its workflow continues-as-new. */
export interface TaskMachineState {
  status: TaskStatus;
  /** Bumped for every SSH attempt scheduled; a claim must name the current one. */
  dispatch: number;
  /** When phase 1 (host match) of the current attempt ends. */
  windowDeadline?: number;
  /** SSH attempts in a row that ended before any claim (declined, failed, rejected) while the task waited. */
  unclaimedEnds?: number;
  /** While set, the next SSH attempt waits until then: a host that keeps failing is not a hot loop. */
  redispatchAt?: number;
  /** The dispatch whose attempt holds the task while it runs on an SSH host. */
  claimedDispatch?: number;
  /** Where that attempt is: its claim activity running, its run due, or its run activity running. */
  runPhase?: RunPhase;
  /** Bumped for every pull offer scheduled. */
  offers?: number;
  /** Offers in a row that ended without a claim while the task waited. */
  fruitlessOffers?: number;
  /** While set, the next offer waits until then. */
  reofferAt?: number;
  /** A pull agent's claim not yet confirmed by its first heartbeat. */
  awaitingConfirm?: boolean;
  /**
   * The last attempt, when its lease lapsed and no attempt has started since: its holder may still
   * report (claim-rules.ts). For `lapseGraceMs` after the lapse the task goes to nobody else.
   */
  lapsed?: LapsedAttempt;
}


export type RunPhase = 'claiming' | 'due' | 'running';

/** The run of a claimed SSH attempt, which the shell must schedule on the host's own queue. */
export interface SshRun {
  dispatch: number;
  hostId: string;
  attempt: number;
  /** When the run must stop (epoch ms): the run timeout from the claim. */
  runDeadline: number;
}

/** An SSH attempt the shell must schedule. */
export interface SshDispatch {
  dispatch: number;
  /** Set when the task is reserved for a host: the attempt goes to that host's own queue. */
  host?: InstanceRef;
  /** Phase 1's rest, the attempt's schedule-to-start timeout; none on a host's own queue. */
  scheduleToStartMs?: number;
}

/** A pull offer the shell must schedule: on the type's pull queue, or on the reserved agent's own. */
export interface PullOffer {
  offer: number;
  /** Set when the task is reserved for a pull agent. */
  agentId?: string;
}

export interface OfferEndReport {
  offer: number;
  outcome?: OfferOutcome;
  /** Set when the offer's activity failed or was cancelled. */
  error?: string;
}

/** How an SSH attempt ended without an outcome, in the machine's terms (the shell classifies Temporal's failures). */
export interface AttemptError {
  kind:
    | 'not_started' // schedule-to-start timeout: no host took it within the window
    | 'silent' // heartbeat timeout: the host went silent
    | 'run_timeout' // start-to-close timeout: the run outlived runTimeout
    | 'cancelled' // the attempt was cancelled
    | 'failed'; // any other failure of the activity
  message: string;
}

export interface AttemptEndReport {
  dispatch: number;
  outcome?: AttemptOutcome;
  error?: AttemptError;
}

/** What the machine asks the shell to do, in order. */
export type TaskEffect =
  | { type: 'report'; event: TaskEvent['type'] }
  | { type: 'cancelAttempt'; dispatch: number }
  | { type: 'withdrawOffer'; offer: number };

/** A message the machine refused, with the stable code the caller sees. */
export class TaskRejection extends Error {
  constructor(readonly rejection: Rejection) {
    super(rejection.message);
  }
}

const iso = (ms: number) => new Date(ms).toISOString();

export class TaskMachine {
  readonly status: TaskStatus;
  private dispatch: number;
  private windowDeadline: number | undefined;
  private unclaimedEnds: number;
  private redispatchAt: number | undefined;
  /** The SSH attempt in flight, if any; only one at a time. */
  private outstanding: number | undefined;
  private claimedDispatch: number | undefined;
  private runPhase: RunPhase | undefined;
  private offers: number;
  /** The pull offer in flight, if any; only one at a time. */
  private outstandingOffer: number | undefined;
  private fruitlessOffers: number;
  private reofferAt: number | undefined;
  private awaitingConfirm: boolean;
  private lapsed: LapsedAttempt | undefined;
  private effects: TaskEffect[] = [];

  private constructor(state: TaskMachineState) {
    this.status = state.status;
    this.dispatch = state.dispatch;
    this.windowDeadline = state.windowDeadline;
    this.unclaimedEnds = state.unclaimedEnds ?? 0;
    this.redispatchAt = state.redispatchAt;
    this.claimedDispatch = state.claimedDispatch;
    this.runPhase = state.runPhase;
    this.offers = state.offers ?? 0;
    this.fruitlessOffers = state.fruitlessOffers ?? 0;
    this.reofferAt = state.reofferAt;
    this.awaitingConfirm = state.awaitingConfirm ?? false;
    this.lapsed = state.lapsed;
  }

  /** A new task; `runId` names this run of the task id (event ids are unique per run). */
  static create(taskId: string, input: TaskInput, now: number, runId: string): TaskMachine {
    return new TaskMachine({
      dispatch: 0,
      status: {
        taskId,
        runId,
        input,
        options: { ...DEFAULT_TASK_OPTIONS, ...input.options },
        state: 'pending',
        mode: 'undecided',
        attempt: 0,
        lostAttempts: 0,
        cancelRequested: false,
        ...(input.hold && Date.parse(input.hold.until) > now ? { hold: input.hold } : {}),
        createdAt: iso(now),
        updatedAt: iso(now),
        attempts: [],
      },
    });
  }

  /** A task carried over by continue-as-new (never with an attempt in flight). */
  static resume(state: TaskMachineState): TaskMachine {
    return new TaskMachine(state);
  }

  snapshot(): TaskMachineState {
    return {
      status: this.status,
      dispatch: this.dispatch,
      windowDeadline: this.windowDeadline,
      unclaimedEnds: this.unclaimedEnds,
      redispatchAt: this.redispatchAt,
      claimedDispatch: this.claimedDispatch,
      runPhase: this.runPhase,
      offers: this.offers,
      fruitlessOffers: this.fruitlessOffers,
      reofferAt: this.reofferAt,
      awaitingConfirm: this.awaitingConfirm,
      lapsed: this.lapsed,
    };
  }

  get closed(): boolean {
    return isClosed(this.status.state);
  }

  /** Is an SSH attempt in flight (continue-as-new must wait for it)? */
  get attemptInFlight(): boolean {
    return this.outstanding !== undefined;
  }

  /** The effects asked for since the last call, oldest first. */
  takeEffects(): TaskEffect[] {
    const taken = this.effects;
    this.effects = [];
    return taken;
  }

  // ---- messages: validators (throw nothing, return the rejection) and handlers ---------------

  validateClaim(request: ClaimRequest): Rejection | null {
    return checkClaim(this.status, request.claimant, request.dispatch, this.outstanding ?? -1);
  }

  claim(request: ClaimRequest, now: number): ClaimGrant {
    this.mustPass(this.validateClaim(request));
    const s = this.status;
    const { claimant } = request;
    const holder: InstanceRef = { kind: claimant.kind, id: claimant.id };
    s.attempt += 1;
    this.lapsed = undefined;
    s.state = 'running';
    s.mode = claimant.kind === 'host' ? 'ssh_cli' : 'http_pull';
    s.assignee = holder;
    s.reservedFor = undefined;
    s.claimedAt = iso(now);
    let leaseMs: number | undefined;
    if (claimant.kind === 'agent') {
      // Until the agent's first heartbeat, only the confirm window: a grant that never reached its
      // agent comes back then, not after a whole lease.
      leaseMs = s.options.claimConfirmMs ? Math.min(s.options.claimConfirmMs, s.options.leaseMs) : s.options.leaseMs;
      this.awaitingConfirm = s.options.claimConfirmMs !== undefined;
      s.leaseExpiresAt = iso(now + leaseMs);
      // A pull agent's run is bounded as an SSH attempt's is (there, by the activity's start-to-close timeout).
      s.runDeadlineAt = iso(now + s.options.runTimeoutMs);
    } else {
      s.leaseExpiresAt = undefined;
      s.runDeadlineAt = undefined;
    }
    s.attempts.push({ attempt: s.attempt, holder, mode: s.mode, claimedAt: iso(now), end: 'running' });
    if (s.attempts.length > MAX_KEPT_ATTEMPTS) {
      const omitted = s.attempts.splice(0, s.attempts.length - MAX_KEPT_ATTEMPTS).length;
      s.attemptsOmitted = (s.attemptsOmitted ?? 0) + omitted;
    }
    this.resetBackoff();
    this.effects.push({ type: 'report', event: 'started' });
    if (claimant.kind === 'host') {
      this.claimedDispatch = request.dispatch;
      this.runPhase = 'claiming';
      this.withdrawOffer();
    } else {
      // A pull agent won: the SSH attempt still scheduled for this task lost. So did the task's
      // offer, unless the claim came through it (its activity then ends by itself).
      this.cancelSshAttempt();
      if (request.offer === undefined || request.offer !== this.outstandingOffer) this.withdrawOffer();
    }
    this.fruitlessOffers = 0;
    this.reofferAt = undefined;
    this.touch(now);
    return { taskId: s.taskId, runId: s.runId, attempt: s.attempt, leaseExpiresAt: s.leaseExpiresAt, ...(leaseMs !== undefined ? { leaseMs } : {}), input: s.input };
  }

  validateHolder(request: HolderRequest, now: number): Rejection | null {
    return checkHolder(this.status, request.holder, request.attempt, this.lapsed, now);
  }

  /**
   * Keeps a pull agent's lease. No wake-up of the workflow is needed: the lease timer re-arms
   * itself (unless the heartbeat took a lapsed attempt back: `status.state` says).
   */
  heartbeat(request: HolderRequest, now: number): HeartbeatAnswer {
    this.mustPass(this.validateHolder(request, now));
    this.takeBackLapsed(now);
    this.awaitingConfirm = false;
    this.recordOutput(request.output);
    const s = this.status;
    let expires = now + s.options.leaseMs;
    // After a cancel the lease is kept only for a short grace: the agent hears of the cancel in
    // this answer, and a holder that keeps heartbeating without stopping cannot hold the task open.
    if (s.cancelRequestedAt) expires = Math.min(expires, Date.parse(s.cancelRequestedAt) + s.options.cancelGraceMs);
    if (s.runDeadlineAt) expires = Math.min(expires, Date.parse(s.runDeadlineAt));
    expires = Math.max(expires, now);
    s.leaseExpiresAt = iso(expires);
    return { leaseExpiresAt: s.leaseExpiresAt, leaseMsLeft: expires - now, cancelRequested: s.cancelRequested };
  }

  complete(request: CompleteRequest, now: number): TaskStatus {
    this.mustPass(this.validateHolder(request, now));
    this.takeBackLapsed(now);
    this.recordOutput(request.output);
    this.finish(request.result, now);
    return this.status;
  }

  fail(request: FailRequest, now: number): TaskStatus {
    this.mustPass(this.validateHolder(request, now));
    this.takeBackLapsed(now);
    this.recordOutput(request.output);
    this.finish({ outcome: 'fail', summary: request.summary, details: request.details }, now);
    return this.status;
  }

  release(request: HolderRequest, now: number): TaskStatus {
    this.mustPass(this.validateHolder(request, now));
    this.takeBackLapsed(now);
    this.endAttempt('released', now, 'given back by its holder');
    if (this.status.cancelRequested) this.close('cancelled', now);
    else this.requeue(now);
    return this.status;
  }

  validateAssign(request: AssignRequest): Rejection | null {
    return checkAssign(this.status, request.target);
  }

  assign(request: AssignRequest, now: number): TaskStatus {
    this.mustPass(this.validateAssign(request));
    const { target } = request;
    // A coordinator's assign is an operator's decision: it lifts a hold, and ends the wait for a
    // lapsed holder, whose late word is no longer taken.
    delete this.status.hold;
    this.lapsed = undefined;
    this.status.reservedFor = { kind: target.kind, id: target.id };
    this.status.mode = target.kind === 'host' ? 'ssh_cli' : 'http_pull';
    // The attempt scheduled on the type's queue must not run now, nor the offer to the type's pull
    // agents: the target's own queue takes over.
    this.cancelOutstanding();
    this.fruitlessOffers = 0;
    this.reofferAt = undefined;
    this.resetBackoff(); // a new target gets its first try at once
    this.touch(now);
    return this.status;
  }

  validateCancel(): Rejection | null {
    return checkCancel(this.status);
  }

  /** Drover's cancel, whether asked through the API or through Temporal (the Web UI, the CLI). */
  cancel(request: CancelRequest, now: number): TaskStatus {
    this.mustPass(this.validateCancel());
    const s = this.status;
    if (s.cancelRequested) return s; // asked twice: the first reason stands
    s.cancelRequested = true;
    s.cancelRequestedAt = iso(now);
    if (request.reason) s.cancelReason = request.reason;
    if (request.by) s.cancelledBy = request.by;
    if (s.state === 'pending') {
      this.cancelOutstanding();
      this.close('cancelled', now);
    } else if (s.mode === 'ssh_cli' && this.outstanding !== undefined) {
      // Reaches the runner as activity cancellation: the remote process is killed, and the task
      // closes once the attempt has ended.
      this.effects.push({ type: 'cancelAttempt', dispatch: this.outstanding });
    } else if (s.mode === 'ssh_cli' && this.runPhase === 'due') {
      // Claimed, and its run not started yet: nothing to stop.
      this.endClaimedRun();
      this.endAttempt('cancelled', now);
      this.close('cancelled', now);
    } else if (s.mode === 'http_pull' && s.leaseExpiresAt) {
      // The pull agent learns of it from its next heartbeat answer; its lease lasts the grace at most.
      s.leaseExpiresAt = iso(Math.min(Date.parse(s.leaseExpiresAt), now + s.options.cancelGraceMs));
    }
    this.touch(now);
    return s;
  }

  // ---- SSH attempts -------------------------------------------------------------------------

  /**
   * The SSH attempt to schedule now, if one is due. Also moves the task to phase 2 (http_pull)
   * when the window passed while attempts were being declined.
   */
  dueSshDispatch(now: number): SshDispatch | undefined {
    if (!this.wantsSshAttempt()) return undefined;
    const s = this.status;
    if (!s.reservedFor && this.windowDeadline !== undefined && now >= this.windowDeadline) {
      s.mode = 'http_pull';
      this.touch(now);
      return undefined;
    }
    if (this.redispatchAt !== undefined && now < this.redispatchAt) return undefined;
    this.redispatchAt = undefined;
    this.dispatch += 1;
    this.outstanding = this.dispatch;
    const host = s.reservedFor?.kind === 'host' ? s.reservedFor : undefined;
    if (host) return { dispatch: this.dispatch, host };
    this.windowDeadline ??= now + s.options.matchWindowMs;
    return { dispatch: this.dispatch, scheduleToStartMs: Math.max(1, this.windowDeadline - now) };
  }

  /** The run of the claimed SSH attempt, when it is due: to be scheduled on the claiming host's own queue. */
  dueSshRun(): SshRun | undefined {
    const s = this.status;
    if (this.runPhase !== 'due' || s.state !== 'running' || this.claimedDispatch === undefined || !s.assignee) return undefined;
    this.runPhase = 'running';
    this.outstanding = this.claimedDispatch;
    return {
      dispatch: this.claimedDispatch,
      hostId: s.assignee.id,
      attempt: s.attempt,
      runDeadline: Date.parse(s.claimedAt!) + s.options.runTimeoutMs,
    };
  }

  // ---- pull offers ---------------------------------------------------------------------------

  /**
   * The pull offer to schedule now, if one is due: a pending task not reserved for a host always
   * has one out, so that a waiting pull agent's poll of the queue finds it (and Temporal's
   * matching orders them: priority, then fairness across repositories, then age).
   */
  dueOffer(now: number): PullOffer | undefined {
    if (!this.wantsOffer()) return undefined;
    if (this.reofferAt !== undefined && now < this.reofferAt) return undefined;
    this.reofferAt = undefined;
    this.offers += 1;
    this.outstandingOffer = this.offers;
    const reserved = this.status.reservedFor;
    return { offer: this.offers, ...(reserved?.kind === 'agent' ? { agentId: reserved.id } : {}) };
  }

  /** A pull offer's activity ended: claimed, lost, or withdrawn. */
  offerEnded(end: OfferEndReport, now: number): void {
    if (this.outstandingOffer !== end.offer) return; // withdrawn before: already forgotten
    this.outstandingOffer = undefined;
    if (end.outcome?.kind === 'claimed' || !this.wantsOffer()) return;
    // Claimed by nobody while the task still waits (a claim that raced a move of the task): offered
    // again at once the first time, then with a growing backoff, so that nothing loops hot.
    this.fruitlessOffers += 1;
    if (this.fruitlessOffers >= 2) {
      this.reofferAt = now + Math.min(REDISPATCH_BACKOFF_MS.initial * 2 ** (this.fruitlessOffers - 2), REDISPATCH_BACKOFF_MS.max);
    }
  }

  /** Withdraws the pull offer in flight, if any (the task was claimed, reassigned, or is closing). */
  withdrawOffer(): void {
    if (this.outstandingOffer === undefined) return;
    this.effects.push({ type: 'withdrawOffer', offer: this.outstandingOffer });
    this.outstandingOffer = undefined;
  }

  /** An SSH attempt's activity ended: its claim's, or its run's. */
  attemptEnded(end: AttemptEndReport, now: number): void {
    if (this.outstanding === end.dispatch) this.outstanding = undefined;
    const s = this.status;
    if (s.state === 'running' && s.mode === 'ssh_cli' && this.claimedDispatch === end.dispatch && this.runPhase === 'claiming') {
      // The claim's activity ended: the run follows on the host's own queue.
      if (s.cancelRequested) {
        this.endClaimedRun();
        this.endAttempt('cancelled', now);
        this.close('cancelled', now);
      } else if (end.outcome?.kind !== 'claimed') {
        // The activity ended without taking the run on (it ended before it heard its claim won,
        // or its host went away): only the run's own activity starts an agent, so nothing ran.
        // Not a lost attempt: dispatched again at once, as a released one would be.
        this.endClaimedRun();
        this.endAttempt('released', now, `the SSH attempt ended before it took the run on: ${end.error?.message ?? 'no result'}`);
        this.requeue(now);
      } else {
        this.runPhase = 'due';
      }
      return;
    }
    if (s.state === 'running' && s.mode === 'ssh_cli' && this.claimedDispatch === end.dispatch) {
      // The run's activity ended.
      this.endClaimedRun();
      const outcome = end.outcome;
      if (outcome?.kind === 'finished' || outcome?.kind === 'timed_out') this.keepLog(outcome);
      if (outcome?.kind === 'finished') {
        this.finish(outcome.result, now);
      } else if (outcome?.kind === 'timed_out' || end.error?.kind === 'run_timeout') {
        this.runTimedOut(now);
      } else if (s.cancelRequested) {
        // However the runner stopped (cancellation, or the killed process's error), it was the cancel.
        this.endAttempt('cancelled', now, end.error && end.error.kind !== 'cancelled' ? end.error.message : undefined);
        this.close('cancelled', now);
      } else {
        // The run's activity gave up: the run was lost, or no worker of the host took it back within
        // the fence grace. Either way the run has stopped itself by now, so the task may go again.
        const why = end.error?.kind === 'not_started' ? `host ${s.assignee?.id} did not take the run back within the fence grace` : end.error?.message;
        this.loseAttempt('lost', why ?? 'SSH attempt ended without a result', now);
      }
      return;
    }
    if (s.state !== 'pending' || end.dispatch !== this.dispatch) return; // an attempt we already moved past
    if (end.error?.kind === 'not_started' && !s.reservedFor) {
      // Phase 2: no host took the task within the window.
      s.mode = 'http_pull';
      this.touch(now);
      return;
    }
    // A host took the attempt off the queue and went silent before it claimed: a worker that died
    // with it in hand, or one whose poll its own shutdown cut off just as the task reached it
    // (Temporal then counts the task started until the heartbeat timeout). A host was found, and
    // lost, as when a claimed attempt's host is lost: the task gets a fresh match window (nothing
    // ran, so nothing counts as lost). Otherwise the window the silent host sat on would pass, and
    // the task would fall back to pull agents while hosts stand idle.
    if (end.error?.kind === 'silent') this.windowDeadline = undefined;
    // Otherwise (declined, lost, or failed before claiming) the task is dispatched again: at once
    // the first time (another host, or a slot freed meanwhile), then with a growing backoff, so that
    // a host that keeps failing (above all one the task is reserved for) is not a hot loop. A host
    // that was full or offline is no failure: it polls again only once it can run the task.
    if (end.outcome?.kind === 'declined' && end.outcome.busy) return;
    this.unclaimedEnds += 1;
    if (this.unclaimedEnds >= 2) {
      this.redispatchAt = now + Math.min(REDISPATCH_BACKOFF_MS.initial * 2 ** (this.unclaimedEnds - 2), REDISPATCH_BACKOFF_MS.max);
    }
  }

  // ---- time -------------------------------------------------------------------------------

  /** When the shell must wake the machine at the latest (lease, run deadline, redispatch backoff). */
  wakeAt(): number | undefined {
    const s = this.status;
    if (s.hold && s.state === 'pending') return Date.parse(s.hold.until);
    if (s.state === 'running' && s.mode === 'http_pull' && s.leaseExpiresAt) {
      return Math.min(Date.parse(s.leaseExpiresAt), s.runDeadlineAt ? Date.parse(s.runDeadlineAt) : Infinity);
    }
    const reoffer = this.reofferAt !== undefined && this.wantsOffer() ? this.reofferAt : Infinity;
    if (this.redispatchAt !== undefined && this.wantsSshAttempt()) {
      const windowEnd = !s.reservedFor && this.windowDeadline !== undefined ? this.windowDeadline : Infinity;
      return Math.min(this.redispatchAt, windowEnd, reoffer);
    }
    return reoffer === Infinity ? undefined : reoffer;
  }

  /**
   * Applies what time has decided: a pull agent's run deadline or lapsed lease. With
   * `lateWakeGrace`, a lease whose end this wake-up comes well after (Temporal or the workflow
   * workers were down: nothing could reach the task) gets one more lease from now, so that an
   * agent that finished during the outage can still report, rather than its work being run again.
   * With `lapseGrace` (asked only when a lease lapses: it is a patch check), the lapsed holder may
   * still take the task back or report until another attempt starts (LapsedAttempt).
   */
  expire(now: number, options: { lateWakeGrace?: boolean; lapseGrace?: () => boolean } = {}): void {
    const s = this.status;
    if (s.hold && now >= Date.parse(s.hold.until)) {
      delete s.hold;
      this.touch(now);
    }
    if (s.state !== 'running' || s.mode !== 'http_pull') return;
    if (s.runDeadlineAt && now >= Date.parse(s.runDeadlineAt)) this.runTimedOut(now);
    else if (s.leaseExpiresAt && now >= Date.parse(s.leaseExpiresAt)) {
      const lateMs = now - Date.parse(s.leaseExpiresAt);
      if (options.lateWakeGrace && lateMs >= LATE_WAKE_MS && !s.cancelRequested) {
        const expires = Math.min(now + s.options.leaseMs, s.runDeadlineAt ? Date.parse(s.runDeadlineAt) : Infinity);
        s.leaseExpiresAt = iso(expires);
        this.touch(now);
        return;
      }
      const who = describeInstance(s.assignee!);
      const why = this.awaitingConfirm
        ? `${who} never confirmed its claim (no heartbeat within ${formatMs(s.options.claimConfirmMs!)}): the answer with the task may not have reached it`
        : `lease of ${who} lapsed`;
      this.loseAttempt('lease_lapsed', why, now);
      if (!this.closed && options.lapseGrace?.()) {
        this.lapsed = { attempt: s.attempt, until: Date.parse(this.currentAttempt()!.claimedAt) + s.options.runTimeoutMs };
        // Neither offered nor dispatched until the grace has passed: time for the holder's late word.
        const graceMs = s.options.lapseGraceMs ?? 0;
        if (graceMs > 0) this.reofferAt = this.redispatchAt = now + graceMs;
      }
    }
  }

  /** The closing event to report once the task is closed. */
  closingEvent(): TaskEvent['type'] {
    const s = this.status;
    if (s.state === 'cancelled') return 'cancelled';
    if (s.result?.outcome === 'success') return 'succeeded';
    if (s.result?.outcome === 'fork') return 'forked';
    return 'failed';
  }

  /** Cancels any SSH attempt and withdraws any offer still in flight (the task closed or was reassigned). */
  cancelOutstanding(): void {
    this.cancelSshAttempt();
    this.withdrawOffer();
  }

  // ---- internals ----------------------------------------------------------------------------

  private mustPass(rejection: Rejection | null): void {
    if (rejection) throw new TaskRejection(rejection);
  }

  private cancelSshAttempt(): void {
    if (this.outstanding === undefined) return;
    this.effects.push({ type: 'cancelAttempt', dispatch: this.outstanding });
    this.outstanding = undefined;
  }

  private wantsOffer(): boolean {
    const s = this.status;
    if (s.state !== 'pending' || s.cancelRequested || s.hold || this.outstandingOffer !== undefined) return false;
    if (s.reservedFor) return s.reservedFor.kind === 'agent';
    return s.mode !== 'ssh_cli';
  }

  private wantsSshAttempt(): boolean {
    const s = this.status;
    if (s.state !== 'pending' || s.cancelRequested || this.outstanding !== undefined) return false;
    if (s.hold) return false;
    if (s.reservedFor) return s.reservedFor.kind === 'host';
    return s.mode === 'undecided';
  }

  /** An SSH attempt's log, which its end brings. */
  private keepLog(outcome: { log?: string; logChars?: number }): void {
    const record = this.currentAttempt();
    if (!record || !outcome.log) return;
    record.logTail = outcome.log;
    if (outcome.logChars !== undefined) record.logChars = outcome.logChars;
  }

  /** A pull agent's uploaded output: the attempt keeps its latest part, and counts it all. */
  private recordOutput(output: string | undefined): void {
    const record = this.currentAttempt();
    if (!output || !record) return;
    const kept = (record.logTail ?? '') + output;
    record.logTail = kept.length > PULL_LOG_CHARS ? kept.slice(-PULL_LOG_CHARS) : kept;
    record.logChars = (record.logChars ?? 0) + output.length;
  }

  private currentAttempt() {
    return this.status.attempts[this.status.attempts.length - 1];
  }

  private touch(now: number): void {
    this.status.updatedAt = iso(now);
  }

  private close(state: TaskState, now: number, result?: TaskResult): void {
    const s = this.status;
    s.state = state;
    if (result) s.result = result;
    s.closedAt = iso(now);
    s.leaseExpiresAt = undefined;
    s.runDeadlineAt = undefined;
    this.touch(now);
  }

  private endAttempt(end: AttemptEnd, now: number, reason?: string): void {
    const record = this.currentAttempt();
    if (record && record.end === 'running') {
      record.end = end;
      record.endedAt = iso(now);
      if (reason) record.reason = reason;
    }
  }

  /** The holder finished (or gave up): close with its result, unless a cancel came first. */
  private finish(result: TaskResult, now: number): void {
    this.endAttempt(result.outcome === 'fail' ? 'failed' : 'completed', now, result.outcome === 'fail' ? result.summary : undefined);
    if (this.status.cancelRequested) this.close('cancelled', now, result);
    else this.close(result.outcome === 'fail' ? 'failed' : 'completed', now, result);
  }

  /** A run that outlived runTimeout fails the task: running it again would only time out again. */
  private runTimedOut(now: number): void {
    const limit = `run timeout of ${formatMs(this.status.options.runTimeoutMs)} reached`;
    this.endAttempt('timed_out', now, limit);
    if (this.status.cancelRequested) this.close('cancelled', now);
    else this.close('failed', now, { outcome: 'fail', summary: `${limit} (${describeInstance(this.status.assignee!)})` });
  }

  private endClaimedRun(): void {
    this.claimedDispatch = undefined;
    this.runPhase = undefined;
  }

  private resetBackoff(): void {
    this.unclaimedEnds = 0;
    this.redispatchAt = undefined;
  }

  /** Back to pending/undecided for a fresh dispatch. */
  private requeue(now: number): void {
    const s = this.status;
    this.awaitingConfirm = false;
    this.lapsed = undefined;
    s.state = 'pending';
    s.mode = 'undecided';
    s.assignee = undefined;
    s.reservedFor = undefined;
    s.leaseExpiresAt = undefined;
    s.runDeadlineAt = undefined;
    this.endClaimedRun();
    this.windowDeadline = undefined;
    this.resetBackoff();
    this.touch(now);
  }

  /**
   * A holder's message that passed validation while the task is pending comes from the holder of
   * the lapsed attempt (checkHolder): the attempt is running again, as it was, with a whole lease
   * from now, and counts as lost no more. Whatever was scheduled meanwhile for others is withdrawn.
   */
  private takeBackLapsed(now: number): void {
    const s = this.status;
    const record = this.currentAttempt();
    if (s.state !== 'pending' || !this.lapsed || !record) return;
    const runDeadline = this.lapsed.until;
    this.lapsed = undefined;
    this.cancelOutstanding();
    this.resetBackoff();
    this.reofferAt = undefined;
    this.fruitlessOffers = 0;
    s.state = 'running';
    s.mode = 'http_pull';
    s.assignee = record.holder;
    s.reservedFor = undefined;
    s.lostAttempts = Math.max(0, s.lostAttempts - 1);
    s.runDeadlineAt = iso(runDeadline);
    s.leaseExpiresAt = iso(Math.min(now + s.options.leaseMs, runDeadline));
    record.retaken = { at: iso(now), lapsedAt: record.endedAt ?? iso(now), lapseReason: record.reason ?? 'lease lapsed' };
    record.end = 'running';
    delete record.endedAt;
    delete record.reason;
    this.touch(now);
  }

  /** The holder lost the task without a result: count it, then dispatch again or give up. */
  private loseAttempt(end: AttemptEnd, reason: string, now: number): void {
    this.endAttempt(end, now, reason);
    const s = this.status;
    if (s.cancelRequested) {
      this.close('cancelled', now);
      return;
    }
    s.lostAttempts += 1;
    if (attemptsExhausted(s)) {
      this.close('failed', now, { outcome: 'fail', summary: `gave up after ${s.lostAttempts} lost attempts; last: ${reason}` });
    } else {
      this.requeue(now);
    }
  }
}

function formatMs(ms: number): string {
  if (ms % 3_600_000 === 0) return `${ms / 3_600_000} h`;
  if (ms % 60_000 === 0) return `${ms / 60_000} min`;
  if (ms % 1_000 === 0) return `${ms / 1_000} s`;
  return `${ms} ms`;
}
