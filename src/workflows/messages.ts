// Message definitions of the task workflow, shared by the workflow, the workers and the API.
import { defineQuery, defineUpdate } from '@temporalio/workflow';
import type { Claimant, ClaimGrant, HeartbeatAnswer, InstanceRef, TaskResult, TaskStatus } from '../model';

export interface ClaimRequest {
  claimant: Claimant;
  /** SSH attempts pass the dispatch number they were scheduled with. */
  dispatch?: number;
  /** A pull agent's claim through a task's offer names the offer (so that the offer is not cancelled as a rival). */
  offer?: number;
}
export interface HolderRequest {
  holder: InstanceRef;
  attempt: number;
  /** A pull agent's output since its last report (heartbeat, complete or fail): the task's live log. */
  output?: string;
}
export interface CompleteRequest extends HolderRequest {
  result: TaskResult;
}
export interface FailRequest extends HolderRequest {
  summary: string;
  details?: Record<string, unknown>;
}
export interface AssignRequest {
  target: Claimant;
  by?: string;
}
export interface CancelRequest {
  reason?: string;
  by?: string;
}

export const claimUpdate = defineUpdate<ClaimGrant, [ClaimRequest]>('claim');
export const heartbeatUpdate = defineUpdate<HeartbeatAnswer, [HolderRequest]>('heartbeat');
export const completeUpdate = defineUpdate<TaskStatus, [CompleteRequest]>('complete');
export const failUpdate = defineUpdate<TaskStatus, [FailRequest]>('fail');
/** The holder gives the task back untried (agent shutting down, dropped connection). */
export const releaseUpdate = defineUpdate<TaskStatus, [HolderRequest]>('release');
export const assignUpdate = defineUpdate<TaskStatus, [AssignRequest]>('assign');
export const cancelUpdate = defineUpdate<TaskStatus, [CancelRequest]>('cancel');
export const statusQuery = defineQuery<TaskStatus>('status');
