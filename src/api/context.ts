// What every API plugin gets: config, the Temporal clients, the agent directory, the pull matcher.
import type { CostLedgerReader } from '../costs';
import type { TaskHold } from '../model';
import type { Client } from '@temporalio/client';
import type { FastifyRequest } from 'fastify';
import type { DroverConfig } from '../config';
import type { ForgejoApi } from '../forgejo/api';
import type { TaskOptions } from '../model';
import type { TaskClient } from '../task-client';
import type { PullMatcher } from './pull-matcher';
import type { AgentDirectory } from './directory';
import type { ApiMetrics } from './metrics';
import type { TaskTallyReader } from '../task-tally';
import type { TemporalCallObserver } from '../temporal-health';

/** Live state of an SSH host, supplied by the SSH side (see GET /api/v1/hosts). */
export interface HostState {
  online: boolean;
  slotsUsed?: number;
}
export type HostPresence = (hostId: string) => Promise<HostState | undefined> | HostState | undefined;

export interface ApiContext {
  config: DroverConfig;
  client: Client;
  tasks: TaskClient;
  directory: AgentDirectory;
  pull: PullMatcher;
  metrics: ApiMetrics;
  /** Set when forgejo.url is configured: commit statuses need it to find their pull request. */
  forgejo?: ForgejoApi;
  /** preHandler for admin-only routes. */
  admin: (request: FastifyRequest) => Promise<void>;
  /** Longest dequeue wait (api.maxDequeueWait). */
  maxWaitMs: number;
  /** Task options from the config's `tasks` defaults, stored with every task the API starts. */
  taskOptions: TaskOptions;
  hostPresence?: HostPresence;
  /** The cost ledger's sums (src/costs.ts): stats, metrics and daily budgets. */
  costs: CostLedgerReader;
  /** Task counts by state × type × mode (src/task-tally.ts): stats and metrics. */
  taskTally: TaskTallyReader;
  /** The hold a new task of `repo` gets while its daily budget is spent (budgets.dailyUsd), if any. */
  budgetHold(repo: string): Promise<TaskHold | undefined>;
  /** What the Temporal client's calls met (reachable or not, throttling): /readyz and /metrics read it. */
  temporalHealth?: TemporalCallObserver;
}

export interface PluginOptions {
  ctx: ApiContext;
}
