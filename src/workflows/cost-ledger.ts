// The cost ledger: what agent runs cost, by day, agent type, repository and provider, kept for
// `/metrics`, `GET /api/v1/stats` and daily budgets. One entity workflow per namespace; the report
// activity of each finished run signals it (signal-with-start). The totals are kept in the
// workflow's memo, which the API reads with a describe(), needing no worker. Deterministic code only.
import * as wf from '@temporalio/workflow';
import { DROVER_ENTITY_ID_PREFIX } from '../names';
import { CostBook, utcDay, type CostBookState, type CostEntry } from './cost-book';

export const COST_LEDGER_WORKFLOW_TYPE = 'costLedgerWorkflow';
export const COST_LEDGER_WORKFLOW_ID = `${DROVER_ENTITY_ID_PREFIX}cost-ledger`;
/** The memo field holding CostBookState. */
export const COST_LEDGER_MEMO = 'costs';

export const recordCostSignal = wf.defineSignal<[CostEntry]>('recordCost');

const MAX_HISTORY_EVENTS = 2_000;

export async function costLedgerWorkflow(args: { state?: CostBookState } = {}): Promise<void> {
  const book = new CostBook(args.state);
  let dirty = true;
  wf.setHandler(recordCostSignal, (entry) => {
    if (book.record(entry)) dirty = true;
  });
  for (;;) {
    await wf.condition(() => dirty);
    dirty = false;
    book.prune(utcDay(new Date(Date.now()).toISOString()));
    const { days, allTime } = book.snapshot();
    // The seen keys stay out of the memo: readers need the sums only.
    wf.upsertMemo({ [COST_LEDGER_MEMO]: { days, allTime } });
    const info = wf.workflowInfo();
    if (info.continueAsNewSuggested || info.historyLength >= MAX_HISTORY_EVENTS) {
      await wf.condition(wf.allHandlersFinished);
      await wf.continueAsNew<typeof costLedgerWorkflow>({ state: book.snapshot() });
    }
  }
}
