// Histories of finished tasks, kept so that a test can replay them against the current workflow code.
import type { temporal } from '@temporalio/proto';
import type { TestTemporal } from './temporal';

export const recordedHistories: Array<{ name: string; workflowId: string; history: temporal.api.history.v1.IHistory }> = [];

export async function recordHistory(t: TestTemporal, name: string, workflowId: string): Promise<void> {
  const history = await t.client.workflow.getHandle(workflowId).fetchHistory();
  recordedHistories.push({ name, workflowId, history });
}
