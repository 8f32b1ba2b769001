// What agent runs cost, by day, agent type, repository and provider: the pure state the cost
// ledger workflow keeps (./cost-ledger.ts), so that tests drive it without Temporal. Imported by
// workflow code: no I/O, no clocks (times come in as arguments).

export interface CostEntry {
  /** Names the run once: a report delivered twice is counted once. */
  key: string;
  /** When the run ended (ISO). */
  at: string;
  agentType: string;
  /** `owner/name`, or '' for a task with no repository. */
  repo: string;
  provider: string;
  costUsd: number;
  tokens: { input: number; output: number; cacheRead: number; cacheWrite: number };
}

export interface CostTotals {
  costUsd: number;
  input: number;
  output: number;
  cacheRead: number;
  cacheWrite: number;
  runs: number;
}

/** One line of totals: its labels and its sums. */
export interface CostRow extends CostTotals {
  agentType: string;
  repo: string;
  provider: string;
}

export interface CostBookState {
  /** Per UTC day (`YYYY-MM-DD`): rows by label key. */
  days: Record<string, Record<string, CostRow>>;
  /** Since the ledger began, by label key: what /metrics counters show. */
  allTime: Record<string, CostRow>;
  /** Keys counted, per day, kept as long as the day. */
  seen: Record<string, string[]>;
}

/** Days of detail kept: enough for "the last 30 days" at any time of day. */
export const COST_DAYS_KEPT = 31;

const emptyTotals = (): CostTotals => ({ costUsd: 0, input: 0, output: 0, cacheRead: 0, cacheWrite: 0, runs: 0 });
const finite = (n: unknown): number => (typeof n === 'number' && Number.isFinite(n) && n >= 0 ? n : 0);

export function utcDay(iso: string): string {
  return iso.slice(0, 10);
}

function addTotals(into: CostTotals, from: CostTotals): void {
  into.costUsd += from.costUsd;
  into.input += from.input;
  into.output += from.output;
  into.cacheRead += from.cacheRead;
  into.cacheWrite += from.cacheWrite;
  into.runs += from.runs;
}

/** One run's entry as totals; numbers a CLI reported wrong count as nothing. */
function entryTotals(entry: CostEntry): CostTotals {
  const { tokens } = entry;
  return { costUsd: finite(entry.costUsd), input: finite(tokens.input), output: finite(tokens.output), cacheRead: finite(tokens.cacheRead), cacheWrite: finite(tokens.cacheWrite), runs: 1 };
}

export class CostBook {
  private readonly state: CostBookState;

  constructor(state?: CostBookState) {
    this.state = state ?? { days: {}, allTime: {}, seen: {} };
  }

  snapshot(): CostBookState {
    return this.state;
  }

  /** Counts a run's cost once; false when its key was counted already. */
  record(entry: CostEntry): boolean {
    const day = utcDay(entry.at);
    if (!/^\d{4}-\d{2}-\d{2}$/.test(day)) return false;
    if (Object.values(this.state.seen).some((keys) => keys.includes(entry.key))) return false;
    (this.state.seen[day] ??= []).push(entry.key);
    const labels = { agentType: entry.agentType, repo: entry.repo, provider: entry.provider };
    const labelKey = JSON.stringify([labels.agentType, labels.repo, labels.provider]);
    const totals = entryTotals(entry);
    const rows = (this.state.days[day] ??= {});
    addTotals((rows[labelKey] ??= { ...labels, ...emptyTotals() }), totals);
    addTotals((this.state.allTime[labelKey] ??= { ...labels, ...emptyTotals() }), totals);
    return true;
  }

  /** Forgets the days before the kept window ending on `today`. */
  prune(today: string): void {
    const oldest = addDays(today, -(COST_DAYS_KEPT - 1));
    for (const day of Object.keys(this.state.days)) if (day < oldest) delete this.state.days[day];
    for (const day of Object.keys(this.state.seen)) if (day < oldest) delete this.state.seen[day];
  }
}

/** `day` ± `n` days (UTC, `YYYY-MM-DD`). */
export function addDays(day: string, n: number): string {
  const ms = Date.parse(`${day}T00:00:00Z`) + n * 86_400_000;
  return new Date(ms).toISOString().slice(0, 10);
}

/** Rows of the days from `from` to `to` (inclusive), summed per label key. */
export function rowsBetween(state: Pick<CostBookState, 'days'>, from: string, to: string): CostRow[] {
  const sums = new Map<string, CostRow>();
  for (const [day, rows] of Object.entries(state.days)) {
    if (day < from || day > to) continue;
    for (const [key, row] of Object.entries(rows)) {
      const sum = sums.get(key) ?? { agentType: row.agentType, repo: row.repo, provider: row.provider, ...emptyTotals() };
      addTotals(sum, row);
      sums.set(key, sum);
    }
  }
  return [...sums.values()];
}

/** What one repository spent on `day`. */
export function spentOn(state: Pick<CostBookState, 'days'>, day: string, repo: string): number {
  return Object.values(state.days[day] ?? {})
    .filter((row) => row.repo === repo)
    .reduce((sum, row) => sum + row.costUsd, 0);
}
