// Webhook deliveries are idempotent across time: the first delivery of an id that starts a task
// leaves a receipt (src/workflows/delivery-receipt.ts); the same id again finds it and starts
// nothing. The window is the namespace's retention of closed workflows (a day on `drover dev`).
import { createHash } from 'node:crypto';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { TASKS_QUEUE } from './names';
import { DELIVERY_RECEIPT_MEMO, DELIVERY_RECEIPT_PREFIX, DELIVERY_RECEIPT_WORKFLOW_TYPE, taskStartedSignal, type deliveryReceiptWorkflow } from './workflows/delivery-receipt';

/** The receipt's workflow id: the delivery id itself when plain (Forgejo's are UUIDs), else its digest. */
export function receiptWorkflowId(deliveryId: string): string {
  const plain = /^[A-Za-z0-9_.-]{1,100}$/.test(deliveryId);
  return `${DELIVERY_RECEIPT_PREFIX}${plain ? deliveryId : `sha256-${createHash('sha256').update(deliveryId, 'utf8').digest('hex')}`}`;
}

export type ReceiptClaim = { first: true } | { first: false; taskId: string | undefined };

export class DeliveryReceipts {
  constructor(private readonly client: Client) {}

  /** Takes the delivery id for `taskId`; `first: false` when an earlier delivery of it took it. */
  async claim(deliveryId: string, taskId: string): Promise<ReceiptClaim> {
    const workflowId = receiptWorkflowId(deliveryId);
    try {
      await this.client.workflow.start<typeof deliveryReceiptWorkflow>(DELIVERY_RECEIPT_WORKFLOW_TYPE, {
        taskQueue: TASKS_QUEUE,
        workflowId,
        args: [{ taskId }],
        memo: { [DELIVERY_RECEIPT_MEMO]: taskId },
        // A receipt given back (its task could not start) may be taken again; any other may not.
        workflowIdReusePolicy: 'ALLOW_DUPLICATE_FAILED_ONLY',
        workflowIdConflictPolicy: 'FAIL',
      });
      return { first: true };
    } catch (error) {
      if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
      const memo = await this.client.workflow.getHandle(workflowId).describe().then((d) => d.memo, () => undefined);
      const earlier = memo?.[DELIVERY_RECEIPT_MEMO];
      return { first: false, taskId: typeof earlier === 'string' ? earlier : undefined };
    }
  }

  /** The delivery's task started: the receipt completes, and holds the id for the retention. */
  async confirm(deliveryId: string): Promise<void> {
    await this.client.workflow.getHandle(receiptWorkflowId(deliveryId)).signal(taskStartedSignal);
  }

  /** Gives the receipt back (the task it was for could not be started): a redelivery may try again. */
  async giveBack(deliveryId: string): Promise<void> {
    try {
      await this.client.workflow.getHandle(receiptWorkflowId(deliveryId)).terminate('the task of this delivery could not be started');
    } catch (error) {
      if (!(error instanceof WorkflowNotFoundError)) throw error;
    }
  }
}
