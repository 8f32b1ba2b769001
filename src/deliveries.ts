// Webhook deliveries are idempotent across time: the first delivery that starts a task leaves a
// receipt (src/workflows/delivery-receipt.ts); the same delivery again finds it and starts
// nothing. A delivery is known by the digest of its signed body, not by its id: Gitea's "Replay"
// sends the old body byte for byte under a new delivery id (captured from Gitea 1.27.3, see
// test/fixtures/gitea), and a redelivery sends the same body too. The window is the namespace's
// retention of closed workflows (a day on `drover dev`).
import { createHash } from 'node:crypto';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { TASKS_QUEUE } from './names';
import { DELIVERY_RECEIPT_MEMO, DELIVERY_RECEIPT_PREFIX, DELIVERY_RECEIPT_WORKFLOW_TYPE, taskStartedSignal, type deliveryReceiptWorkflow } from './workflows/delivery-receipt';

/** What names a delivery: the SHA-256 of its signed body. */
export function deliveryKey(signedBody: Buffer): string {
  return createHash('sha256').update(signedBody).digest('hex');
}

function receiptWorkflowId(key: string): string {
  return `${DELIVERY_RECEIPT_PREFIX}${key}`;
}

export type ReceiptClaim = { first: true } | { first: false; taskId: string | undefined };

export class DeliveryReceipts {
  constructor(private readonly client: Client) {}

  /** Takes the delivery `key` for `taskId`; `first: false` when an earlier delivery of it took it. */
  async claim(key: string, taskId: string): Promise<ReceiptClaim> {
    const workflowId = receiptWorkflowId(key);
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
  async confirm(key: string): Promise<void> {
    await this.client.workflow.getHandle(receiptWorkflowId(key)).signal(taskStartedSignal);
  }

  /** Gives the receipt back (the task it was for could not be started): a redelivery may try again. */
  async giveBack(key: string): Promise<void> {
    try {
      await this.client.workflow.getHandle(receiptWorkflowId(key)).terminate('the task of this delivery could not be started');
    } catch (error) {
      if (!(error instanceof WorkflowNotFoundError)) throw error;
    }
  }
}
