// Reading the cost ledger (src/workflows/cost-ledger.ts) from its memo: no worker needed. Serves
// /metrics, GET /api/v1/stats and the daily budgets checked when a task is enqueued.
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { addDays, rowsBetween, spentOn, utcDay, type CostBookState, type CostRow } from './workflows/cost-book';
import { COST_LEDGER_MEMO, COST_LEDGER_WORKFLOW_ID } from './workflows/cost-ledger';

export type CostSums = Pick<CostBookState, 'days' | 'allTime'>;

export async function readCostLedger(client: Client): Promise<CostSums> {
  try {
    const description = await client.workflow.getHandle(COST_LEDGER_WORKFLOW_ID).describe();
    const state = description.memo?.[COST_LEDGER_MEMO] as CostSums | undefined;
    return state && typeof state === 'object' && state.days && state.allTime ? state : { days: {}, allTime: {} };
  } catch (error) {
    if (error instanceof WorkflowNotFoundError) return { days: {}, allTime: {} };
    throw error;
  }
}

/** Reads the ledger at most once per `ttlMs`, however many callers ask. */
export class CostLedgerReader {
  private cached: { at: number; value: Promise<CostSums> } | undefined;
  constructor(
    private readonly client: Client,
    private readonly ttlMs = 5_000,
  ) {}

  read(): Promise<CostSums> {
    if (!this.cached || Date.now() - this.cached.at >= this.ttlMs) {
      const value = readCostLedger(this.client);
      this.cached = { at: Date.now(), value };
      value.catch(() => {
        this.cached = undefined;
      });
    }
    return this.cached.value;
  }
}

export interface CostWindow {
  usd: number;
  tokens: number;
  runs: number;
  by_type: Record<string, { usd: number; tokens: number; runs: number }>;
  by_repo: Record<string, { usd: number; tokens: number; runs: number }>;
}

function windowOf(rows: CostRow[]): CostWindow {
  const window: CostWindow = { usd: 0, tokens: 0, runs: 0, by_type: {}, by_repo: {} };
  for (const row of rows) {
    const tokens = row.input + row.output + row.cacheRead + row.cacheWrite;
    window.usd += row.costUsd;
    window.tokens += tokens;
    window.runs += row.runs;
    for (const [group, name] of [
      [window.by_type, row.agentType],
      [window.by_repo, row.repo || '(none)'],
    ] as const) {
      const sum = (group[name] ??= { usd: 0, tokens: 0, runs: 0 });
      sum.usd += row.costUsd;
      sum.tokens += tokens;
      sum.runs += row.runs;
    }
  }
  return window;
}

/** Today (UTC) and the 30 UTC days ending today. */
export function costWindows(sums: CostSums, now = new Date()): { today: CostWindow; last_30_days: CostWindow } {
  const today = utcDay(now.toISOString());
  return { today: windowOf(rowsBetween(sums, today, today)), last_30_days: windowOf(rowsBetween(sums, addDays(today, -29), today)) };
}

/** The daily budget of `repo` (USD), if the config sets one: its own, or `*`'s. */
export function dailyBudget(budgets: Record<string, number>, repo: string): number | undefined {
  if (!repo) return undefined;
  return Object.hasOwn(budgets, repo) ? budgets[repo] : Object.hasOwn(budgets, '*') ? budgets['*'] : undefined;
}

/** Whether `repo` has spent its daily budget today; with the hold a new task gets then. */
export function budgetHold(sums: CostSums, budgets: Record<string, number>, repo: string, now = new Date()): { reason: string; until: string } | undefined {
  const budget = dailyBudget(budgets, repo);
  if (budget === undefined) return undefined;
  const today = utcDay(now.toISOString());
  const spent = spentOn(sums, today, repo);
  if (spent < budget) return undefined;
  return {
    reason: `the daily budget of ${repo} is spent ($${spent.toFixed(2)} of $${budget.toFixed(2)} today, UTC)`,
    until: `${addDays(today, 1)}T00:00:00.000Z`,
  };
}
