// A delivery receipt: one tiny workflow per webhook delivery id that started a task, so that the
// same delivery again (Forgejo's redelivery, Gitea's "Replay" days later) never starts a second
// run. Temporal's workflow id uniqueness is the store: the id stays taken for as long as the
// namespace retains the completed receipt. Its memo names the task.
//
// A receipt completes only once the API confirms its task started (a signal): a receipt whose
// task never started fails, and a failed receipt's id may be taken again by a redelivery.
// Deterministic code only.
import * as wf from '@temporalio/workflow';
import { DROVER_ENTITY_ID_PREFIX } from '../names';

export const DELIVERY_RECEIPT_WORKFLOW_TYPE = 'deliveryReceiptWorkflow';
export const DELIVERY_RECEIPT_PREFIX = `${DROVER_ENTITY_ID_PREFIX}delivery-`;
/** The memo field holding the task id the delivery started. */
export const DELIVERY_RECEIPT_MEMO = 'taskId';
/** How long the API has to confirm that the delivery's task started. */
export const DELIVERY_CONFIRM_WINDOW_MS = 120_000;

export const taskStartedSignal = wf.defineSignal('taskStarted');

export async function deliveryReceiptWorkflow(args: { taskId: string }): Promise<string> {
  let started = false;
  wf.setHandler(taskStartedSignal, () => {
    started = true;
  });
  if (!(await wf.condition(() => started, DELIVERY_CONFIRM_WINDOW_MS))) {
    throw wf.ApplicationFailure.nonRetryable(`the task ${args.taskId} of this delivery was never confirmed started`, 'delivery_unconfirmed');
  }
  return args.taskId;
}
