// The contract between the task workflow and the activities it schedules.
import type { TaskResult } from '../model';
import type { Rejection } from './claim-rules';

export interface AttemptRequest {
  taskId: string;
  agentType: string;
  /** Which dispatch of the task this attempt is; the claim must name it. */
  dispatch: number;
}

export type AttemptOutcome =
  /** The host ran the agent: the attempt's result. */
  | { kind: 'finished'; attempt: number; result: TaskResult }
  /** The claim was rejected (another claimant won, or the task moved on). */
  | { kind: 'lost'; rejection: Rejection }
  /** The host picked the attempt up but had no free slot or was offline: dispatch again. */
  | { kind: 'declined'; reason: string };

export interface AttemptActivities {
  runAttempt(request: AttemptRequest): Promise<AttemptOutcome>;
}
