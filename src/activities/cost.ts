// The cost sink: a finished run's cost and tokens (as its provider reported them in the result's
// details) go to the cost ledger workflow (src/workflows/cost-ledger.ts), once per task run.
import type { Client } from '@temporalio/client';
import type { TaskStatus } from '../model';
import { COST_LEDGER_WORKFLOW_ID, COST_LEDGER_WORKFLOW_TYPE, recordCostSignal } from '../workflows/cost-ledger';
import type { CostEntry } from '../workflows/cost-book';
import { BOOKKEEPING_START } from '../workflows/priority';
import type { TaskEventSink } from './report';

const count = (value: unknown): number => (typeof value === 'number' && Number.isFinite(value) && value >= 0 ? value : 0);

/** The ledger entry of a closed task's result, when its provider reported a cost or tokens. */
export function costEntry(status: TaskStatus): CostEntry | undefined {
  const details = status.result?.details;
  if (!details) return undefined;
  const tokens = (details.tokens ?? {}) as Record<string, unknown>;
  const entry: CostEntry = {
    key: `${status.taskId}/${status.runId}`,
    at: status.closedAt ?? status.updatedAt,
    agentType: status.input.agentType,
    repo: status.input.repo,
    provider: typeof details.provider === 'string' ? details.provider : 'unknown',
    costUsd: count(details.costUsd),
    tokens: { input: count(tokens.input), output: count(tokens.output), cacheRead: count(tokens.cacheRead), cacheWrite: count(tokens.cacheWrite) },
  };
  const reported = typeof details.costUsd === 'number' || Object.values(entry.tokens).some((n) => n > 0);
  return reported ? entry : undefined;
}

export function costLedgerSink(client: Client): TaskEventSink {
  return async (event) => {
    if (event.type === 'started') return;
    const entry = costEntry(event.status);
    if (!entry) return;
    await client.workflow.signalWithStart(COST_LEDGER_WORKFLOW_TYPE, {
      workflowId: COST_LEDGER_WORKFLOW_ID,
      ...BOOKKEEPING_START,
      args: [{}],
      signal: recordCostSignal,
      signalArgs: [entry],
    });
  };
}
