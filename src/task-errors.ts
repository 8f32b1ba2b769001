// Errors that cross from the task workflow to its callers, with stable codes the API turns
// into HTTP answers.
import { ApplicationFailure, WorkflowNotFoundError } from '@temporalio/common';
import { WorkflowUpdateFailedError } from '@temporalio/client';
import type { Rejection, RejectionCode } from './workflows/claim-rules';
import { REJECTION_CODES } from './workflows/claim-rules';

export type TaskErrorCode = RejectionCode | 'task_not_found';

/** A task operation refused for a reason the caller can act on. */
export class TaskError extends Error {
  override readonly name = 'TaskError';
  constructor(
    readonly code: TaskErrorCode,
    message: string,
  ) {
    super(message);
  }
}

function isRejectionCode(type: string | undefined | null): type is RejectionCode {
  return !!type && (REJECTION_CODES as readonly string[]).includes(type);
}

/** The workflow's rejection carried by a failed Update, or undefined for any other error. */
export function asRejection(error: unknown): Rejection | undefined {
  if (error instanceof WorkflowUpdateFailedError && error.cause instanceof ApplicationFailure && isRejectionCode(error.cause.type)) {
    return { code: error.cause.type, message: error.cause.message };
  }
  if (error instanceof WorkflowNotFoundError) {
    // Updates to a workflow that has already closed fail this way too.
    return { code: 'task_closed', message: `task ${error.workflowId} is closed or unknown` };
  }
  return undefined;
}
