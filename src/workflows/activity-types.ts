// The contract between the task workflow and the activities it schedules.
import type { TaskResult, TaskStatus } from '../model';
import type { Rejection } from './claim-rules';

export interface AttemptRequest {
  taskId: string;
  agentType: string;
  /** Which dispatch of the task this attempt is; the claim must name it. */
  dispatch: number;
}

export type AttemptOutcome =
  /** The host ran the agent: the attempt's result, and the tail of its output log. */
  | { kind: 'finished'; attempt: number; result: TaskResult; log?: string }
  /** The run outlived the task's run timeout and was stopped. */
  | { kind: 'timed_out'; attempt: number; log?: string }
  /** The claim was rejected (another claimant won, or the task moved on). */
  | { kind: 'lost'; rejection: Rejection }
  /**
   * The host picked the attempt up but could not run it: dispatch again. `busy` when it had no free
   * slot or was offline (a poll it opened before): its poll gate keeps it from taking the next one
   * until it can run it, so that is no failure to back off from.
   */
  | { kind: 'declined'; reason: string; busy?: boolean };

export interface AttemptActivities {
  runAttempt(request: AttemptRequest): Promise<AttemptOutcome>;
}

/** A task event that people should hear about (a Forgejo comment, the task's callback URL). */
export interface TaskEvent {
  type: 'started' | 'succeeded' | 'forked' | 'failed' | 'cancelled';
  status: TaskStatus;
}

export interface ReportActivities {
  /** Delivers one event; retried until it succeeds, so an outage delays it but never loses it. */
  reportTaskEvent(event: TaskEvent): Promise<void>;
}
