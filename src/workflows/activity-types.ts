// The contract between the task workflow and the activities it schedules.
import type { TaskTransition } from './task-tally-book';
import type { TaskInput, TaskResult, TaskStatus } from '../model';
import type { Rejection } from './claim-rules';

export interface AttemptRequest {
  taskId: string;
  agentType: string;
  /** Which dispatch of the task this attempt is; the claim must name it. */
  dispatch: number;
}

/** The failure type of an SSH run lost for good: the workflow does not retry such an activity. */
export const RUN_LOST = 'run_lost';

/** The run of a claimed SSH attempt, on the claiming host's own queue. */
export interface RunRequest {
  taskId: string;
  /** The task's run id: with the attempt, it names the run on the host (its directory). */
  runId: string;
  dispatch: number;
  attempt: number;
  input: TaskInput;
  /** A run that no worker holds for this long stops itself. */
  fenceGraceMs: number;
  /** The run is stopped at this time (epoch ms): the task's run timeout from its claim. */
  runDeadline: number;
}

export type AttemptOutcome =
  /** The host won the claim: the run follows on the host's own queue (runClaimed). */
  | { kind: 'claimed'; attempt: number }
  /** The host ran the agent: the attempt's result, and the tail of its output log. */
  | { kind: 'finished'; attempt: number; result: TaskResult; log?: string; logChars?: number }
  /** The run outlived the task's run timeout and was stopped. */
  | { kind: 'timed_out'; attempt: number; log?: string; logChars?: number }
  /** The claim was rejected (another claimant won, or the task moved on). */
  | { kind: 'lost'; rejection: Rejection }
  /**
   * The host picked the attempt up but could not run it: dispatch again. `busy` when it had no free
   * slot or was offline (a poll it opened before): its poll gate keeps it from taking the next one
   * until it can run it, so that is no failure to back off from.
   */
  | { kind: 'declined'; reason: string; busy?: boolean };

export interface AttemptActivities {
  /** Matches the task to a host (the queue it is polled from) and asks the workflow for the claim. */
  runAttempt(request: AttemptRequest): Promise<AttemptOutcome>;
  /**
   * Runs a claimed attempt, or attaches to its run when a try before (a worker since restarted)
   * started it: retried on the host's own queue until the run ends or is lost.
   */
  runClaimed(request: RunRequest): Promise<AttemptOutcome>;
}

/** A pending task's offer to the pull agents of its type (or to the one agent it is reserved for). */
export interface OfferRequest {
  taskId: string;
  agentType: string;
  /** Which offer of the task this is; the claim names it. */
  offer: number;
  /** Set when the task is reserved for this pull agent: the offer is on the agent's own queue. */
  agentId?: string;
}

export type OfferOutcome =
  /** A waiting agent won the claim; the grant went to it. */
  | { kind: 'claimed'; attempt: number; agentId: string }
  /** The claim was rejected (an SSH host won, the task moved on, or it is reserved for another). */
  | { kind: 'lost'; rejection: Rejection };

export interface OfferActivities {
  /**
   * Runs in an API process where an agent the offer suits waits (it polls the queue only then),
   * and claims the task for that agent through the workflow's claim Update.
   */
  offerTask(request: OfferRequest): Promise<OfferOutcome>;
}

/** The failure type of an offer given back untried (its agent left before it came): offered again. */
export const OFFER_RETURNED = 'offer_returned';

/** A task event that people should hear about (a Forgejo comment, the task's callback URL). */
export interface TaskEvent {
  type: 'started' | 'succeeded' | 'forked' | 'failed' | 'cancelled';
  status: TaskStatus;
}

export interface ReportActivities {
  /** Delivers one event; retried until it succeeds, so an outage delays it but never loses it. */
  reportTaskEvent(event: TaskEvent): Promise<void>;
  /** Tells the task tally where a task now is (TALLY_BY_ACTIVITIES_PATCH). */
  tellTaskTally(transition: TaskTransition): Promise<void>;
}
