// Prometheus metrics of one API process (its own registry, so that several apps can live in one
// process, as in tests): requests, dequeue waits, claims won and lost, webhooks, tasks by state,
// and what the Temporal client met (throttling, outages).
import type { FastifyInstance } from 'fastify';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { TASK_STATES } from '../model';
import type { CostLedgerReader } from '../costs';
import type { TaskCount } from '../workflows/task-tally-book';
import type { TemporalCallObserver } from '../temporal-health';
import type { PullMetrics } from './pull-matcher';

/** How long the task counts of one scrape serve the next ones. */
export const TASK_COUNTS_TTL_MS = 5_000;
/**
 * Longest a scrape waits for Temporal (task counts, the cost ledger). The client retries a call to
 * an unreachable or throttling server for up to about 20 s, and Prometheus gives up on a scrape
 * after 10: the whole scrape, drover_temporal_reachable with it, would be lost.
 */
export const SCRAPE_TEMPORAL_WAIT_MS = 3_000;

export class ApiMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'drover_http_requests_total',
    help: 'HTTP requests answered, by method, route and status',
    labelNames: ['method', 'route', 'status'] as const,
    registers: [this.registry],
  });
  readonly requestSeconds = new Histogram({
    name: 'drover_http_request_duration_seconds',
    help: 'HTTP request duration (dequeue long-polls included)',
    labelNames: ['method', 'route'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly dequeueWait = new Histogram({
    name: 'drover_dequeue_wait_seconds',
    help: 'How long dequeue long-polls waited, by outcome (task, timeout, aborted, shutdown)',
    labelNames: ['outcome'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly dequeueWaiting = new Gauge({
    name: 'drover_dequeue_waiting',
    help: 'Pull agents waiting in a dequeue long-poll on this process',
    registers: [this.registry],
  });
  readonly claims = new Counter({
    name: 'drover_claims_total',
    help: 'Claims made for dequeuing agents, by result (won, lost) and rejection code',
    labelNames: ['result', 'code'] as const,
    registers: [this.registry],
  });
  readonly offersReturned = new Counter({
    name: 'drover_offers_returned_total',
    help: 'Task offers this process polled for an agent that had left, and gave back to the queue',
    registers: [this.registry],
  });
  readonly webhooks = new Counter({
    name: 'drover_webhooks_total',
    help: 'Forgejo deliveries, by event and result (created, existing, duplicate, ignored, unknown_type, bad_signature, bad_payload)',
    labelNames: ['event', 'result'] as const,
    registers: [this.registry],
  });

  private temporal: TemporalCallObserver | undefined;

  /** `taskCounts` reads the task tallies (TaskTallyReader): no visibility call once they run. */
  constructor(taskCounts: () => Promise<TaskCount[]>, costs?: CostLedgerReader) {
    collectDefaultMetrics({ register: this.registry, prefix: 'drover_' });
    if (costs) this.costMetrics(costs);
    // /metrics is open: however often it is scraped, Temporal is asked at most once per TTL.
    let counted: { at: number; counts: Promise<TaskCount[]> } | undefined;
    const scrape = this.scrapeRead.bind(this);
    new Gauge({
      name: 'drover_tasks',
      help: `Tasks by state, from the task tallies (read at scrape time, at most every ${TASK_COUNTS_TTL_MS / 1000} s)`,
      labelNames: ['state'] as const,
      registers: [this.registry],
      async collect() {
        const counts = await scrape(() => {
          if (!counted || Date.now() - counted.at >= TASK_COUNTS_TTL_MS) {
            counted = { at: Date.now(), counts: taskCounts() };
          }
          return counted.counts;
        });
        // Not read (Temporal unreachable, the tallies unanswered): the last values stand.
        if (!counts) return;
        for (const state of TASK_STATES) this.set({ state }, counts.filter((row) => row.state === state).reduce((sum, row) => sum + row.count, 0));
      },
    });
  }

  /**
   * Agent cost and tokens since the ledger began, by type, repository and provider: counters whose
   * values are the ledger's (every API process shows the same; they never go down).
   */
  private costMetrics(costs: CostLedgerReader): void {
    const scrape = this.scrapeRead.bind(this);
    new Counter({
      name: 'drover_agent_cost_usd_total',
      help: 'What agent runs cost (USD), as their CLIs reported it, by agent type, repository and provider',
      labelNames: ['type', 'repo', 'provider'] as const,
      registers: [this.registry],
      async collect() {
        const sums = await scrape(() => costs.read());
        if (!sums) return;
        this.reset();
        for (const row of Object.values(sums.allTime)) this.inc({ type: row.agentType, repo: row.repo, provider: row.provider }, row.costUsd);
      },
    });
    new Counter({
      name: 'drover_agent_tokens_total',
      help: 'Tokens agent runs used, as their CLIs reported them, by agent type, repository, provider and kind (input, output, cache_read, cache_write)',
      labelNames: ['type', 'repo', 'provider', 'kind'] as const,
      registers: [this.registry],
      async collect() {
        const sums = await scrape(() => costs.read());
        if (!sums) return;
        this.reset();
        for (const row of Object.values(sums.allTime)) {
          const labels = { type: row.agentType, repo: row.repo, provider: row.provider };
          this.inc({ ...labels, kind: 'input' }, row.input);
          this.inc({ ...labels, kind: 'output' }, row.output);
          this.inc({ ...labels, kind: 'cache_read' }, row.cacheRead);
          this.inc({ ...labels, kind: 'cache_write' }, row.cacheWrite);
        }
      },
    });
  }

  /**
   * What the API's Temporal client met (src/temporal-health.ts), read at scrape time: throttled and
   * unavailable calls by method (each retry attempt counts), whether Temporal is reachable, and how
   * often it came back after an outage.
   */
  observeTemporal(observer: TemporalCallObserver): void {
    this.temporal = observer;
    const byMethod = (name: string, help: string, read: () => ReadonlyMap<string, number>) =>
      new Counter({
        name,
        help,
        labelNames: ['method'] as const,
        registers: [this.registry],
        collect() {
          this.reset();
          for (const [method, count] of read()) this.inc({ method }, count);
        },
      });
    byMethod(
      'drover_temporal_throttled_total',
      'Calls to Temporal refused with RESOURCE_EXHAUSTED (a rate limit), by gRPC method; the client retries them',
      () => observer.throttledByMethod(),
    );
    byMethod(
      'drover_temporal_unavailable_total',
      'Calls to Temporal that found it unavailable (UNAVAILABLE, no connection), by gRPC method',
      () => observer.unavailableByMethod(),
    );
    new Gauge({
      name: 'drover_temporal_reachable',
      help: "1 while Temporal answers this process's calls, 0 while they find it unreachable (until one is answered again)",
      registers: [this.registry],
      collect() {
        this.set(observer.state().status === 'unreachable' ? 0 : 1);
      },
    });
    new Counter({
      name: 'drover_temporal_reconnects_total',
      help: 'Times Temporal became reachable again after being unreachable',
      registers: [this.registry],
      collect() {
        this.reset();
        this.inc(observer.reconnects);
      },
    });
  }

  /**
   * A read from Temporal for a scrape: none while Temporal is known to be unreachable, and none
   * past SCRAPE_TEMPORAL_WAIT_MS (the metric keeps its previous values; the read goes on, cached).
   */
  private async scrapeRead<T>(read: () => Promise<T>): Promise<T | undefined> {
    if (this.temporal?.state().status === 'unreachable') return undefined;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), SCRAPE_TEMPORAL_WAIT_MS);
    });
    try {
      return await Promise.race([read().catch(() => undefined), late]);
    } finally {
      clearTimeout(timer);
    }
  }

  pull(): PullMetrics {
    return {
      claimWon: () => this.claims.inc({ result: 'won', code: '' }),
      claimLost: (code) => this.claims.inc({ result: 'lost', code }),
      waiting: (count) => this.dequeueWaiting.set(count),
      offerReturned: () => this.offersReturned.inc(),
    };
  }

  /** Counts every answered request; the route label is the route pattern, never the raw URL. */
  install(app: FastifyInstance): void {
    app.addHook('onResponse', async (request, reply) => {
      const route = request.routeOptions.url ?? 'unmatched';
      this.requests.inc({ method: request.method, route, status: String(reply.statusCode) });
      this.requestSeconds.observe({ method: request.method, route }, reply.elapsedTime / 1000);
    });
  }
}
