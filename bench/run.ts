// `npm run bench`: Drover's figures beside the engine's own limit, measured in one run on one
// embedded dev server. Not a test: these machines are shared, so read ratios, not absolutes.
//   BENCH_TASKS (default 200), BENCH_CLAIMANTS (default 8), BENCH_BASELINE_CONCURRENCY (default 32),
//   BENCH_ROUND_TRIPS (default 50: the trivial workflow's round trip, one at a time),
//   BENCH_ONLY=core,http,pull,ssh,workspace,reconnect (BENCH_WORKSPACE_RUNS, default 20; BENCH_OUTAGE_MS, default 30000;
//   pull: BENCH_BACKLOGS, default 0,1000,10000, and the settings in bench/pull.ts)
//   BENCH_TEMPORAL_ADDRESS=host:port: a running server instead of the embedded dev server, e.g. the
//   cluster tier (`bash scripts/cluster.sh start`, 127.0.0.1:17233; BENCH_TEMPORAL_METRICS_URL, its metrics)
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Runtime, Worker, bundleWorkflowCode } from '@temporalio/worker';
import { startDevServer } from '../src/dev-server';
import { freePort } from '../test/support/process';
import type { Claimant } from '../src/model';
import { TASKS_QUEUE } from '../src/names';
import { TaskClient } from '../src/task-client';
import { createReportActivities } from '../src/activities/report';
import type { BenchContext } from './context';
import { pool, round, summarize, type Summary } from './stats';

const TASKS = Number(process.env.BENCH_TASKS ?? 200);
const CLAIMANTS = Number(process.env.BENCH_CLAIMANTS ?? 8);
/** The engine's limit is a throughput at saturation: start and complete trivial workflows this many at a time. */
const BASELINE_CONCURRENCY = Number(process.env.BENCH_BASELINE_CONCURRENCY ?? 32);
const ROUND_TRIPS = Number(process.env.BENCH_ROUND_TRIPS ?? 50);
const ONLY = new Set((process.env.BENCH_ONLY ?? 'core,http,pull,ssh,workspace,reconnect').split(','));

type BaseContext = Omit<BenchContext, 'trivialPerSecond' | 'trivialRoundTrip'>;

async function trivialBaseline(ctx: BaseContext): Promise<number> {
  const ids = Array.from({ length: TASKS }, (_, i) => `bench-trivial-${Date.now()}-${i}`);
  const started = performance.now();
  await pool(ids, BASELINE_CONCURRENCY, async (workflowId) => {
    await ctx.client.workflow.execute('trivialWorkflow', { taskQueue: TASKS_QUEUE, workflowId });
  });
  const seconds = (performance.now() - started) / 1000;
  return TASKS / seconds;
}

let roundTrips = 0;
/** One trivial workflow started and awaited, ms. */
async function timeTrivialRoundTrip(client: BenchContext['client']): Promise<number> {
  const t0 = performance.now();
  await client.workflow.execute('trivialWorkflow', { taskQueue: TASKS_QUEUE, workflowId: `bench-round-trip-${Date.now()}-${(roundTrips += 1)}` });
  return performance.now() - t0;
}

/** The engine's latency on this server: trivial workflows started and awaited one at a time. */
async function trivialRoundTrip(client: BenchContext['client'], samples = ROUND_TRIPS): Promise<Summary> {
  const times: number[] = [];
  for (let i = 0; i < samples; i++) times.push(await timeTrivialRoundTrip(client));
  return summarize(times);
}

/** Start → claimed → completed with N concurrent claimants (claims are the workflow's Updates). */
async function coreThroughput(ctx: BenchContext): Promise<Record<string, unknown>> {
  const type = `bench-${Date.now()}`;
  const repo = `bench/core-${Date.now()}`;
  const queue: Array<{ taskId: string; startedAt: number }> = [];
  const claimLatency: number[] = [];
  const startToClaimed: number[] = [];
  const started = performance.now();
  const starting = pool(
    Array.from({ length: TASKS }, (_, i) => i + 1),
    CLAIMANTS,
    async (number) => {
      const startedAt = performance.now();
      const { taskId } = await ctx.tasks.start({ agentType: type, kind: 'implement', repo, number, title: 'bench', prompt: 'p', options: { matchWindowMs: 60_000 } });
      queue.push({ taskId, startedAt });
    },
  );
  let done = 0;
  const closing: Promise<unknown>[] = [];
  const claimants = Array.from({ length: CLAIMANTS }, async (_, i) => {
    const me: Claimant = { kind: 'agent', id: `bench-agent-${i}`, types: [type] };
    while (done < TASKS) {
      const next = queue.shift();
      if (!next) {
        await new Promise((r) => setTimeout(r, 1));
        continue;
      }
      const t0 = performance.now();
      const grant = await ctx.tasks.claim(next.taskId, me);
      const t1 = performance.now();
      claimLatency.push(t1 - t0);
      startToClaimed.push(t1 - next.startedAt);
      await ctx.tasks.complete(next.taskId, me, grant.attempt, { outcome: 'success', summary: 'bench' });
      closing.push(ctx.tasks.result(next.taskId));
      done += 1;
    }
  });
  await Promise.all([starting, ...claimants]);
  // Like the baseline, a task counts once its workflow has closed (its final report delivered).
  await Promise.all(closing);
  const seconds = (performance.now() - started) / 1000;
  const perSecond = TASKS / seconds;
  // The machine is shared: measure the engine again beside Drover so the ratio is side by side.
  const trivialAfter = await trivialBaseline(ctx);
  return {
    tasks: TASKS,
    claimants: CLAIMANTS,
    'tasks/s (start → claimed → completed → workflow closed)': round(perSecond),
    'claim Update latency ms': summarize(claimLatency),
    'start → claimed ms': summarize(startToClaimed),
    'trivial workflows/s (same server), at start of run': round(ctx.trivialPerSecond),
    'trivial workflows/s, measured again right after': round(trivialAfter),
    'ratio drover/trivial (against the mean of the two)': round(perSecond / ((ctx.trivialPerSecond + trivialAfter) / 2), 2),
  };
}

/** A running server (namespace `default`), with what the embedded one's environment gives. */
async function connectTo(address: string): Promise<{ address: string; client: Client; nativeConnection: NativeConnection; teardown(): Promise<void> }> {
  const connection = await Connection.connect({ address });
  const nativeConnection = await NativeConnection.connect({ address });
  return {
    address,
    client: new Client({ connection, namespace: 'default' }),
    nativeConnection,
    async teardown() {
      await nativeConnection.close();
      await connection.close();
    },
  };
}

async function main(): Promise<void> {
  // BENCH_WORKER_METRICS=host:port serves the SDK's own worker metrics (sticky cache, schedule-to-start) while it runs.
  const workerMetrics = process.env.BENCH_WORKER_METRICS;
  Runtime.install({
    logger: { log: () => {}, trace: () => {}, debug: () => {}, info: () => {}, warn: () => {}, error: (m) => console.error(m) },
    ...(workerMetrics ? { telemetryOptions: { metrics: { prometheus: { bindAddress: workerMetrics } } } } : {}),
  });
  const log = (line: string) => console.log(line);
  const external = process.env.BENCH_TEMPORAL_ADDRESS;
  log(external ? `bench: against the Temporal server at ${external}; bundling workflows…` : `bench: starting an in-memory Temporal dev server and bundling workflows…`);
  const metricsPort = await freePort();
  const [env, workflowBundle] = await Promise.all([
    external
      ? connectTo(external)
      : startDevServer({ metricsPort, dynamicConfig: JSON.parse(process.env.BENCH_DYNAMIC_CONFIG ?? '{}') as Record<string, boolean | number | string> }),
    bundleWorkflowCode({ workflowsPath: fileURLToPath(new URL('./workflows.ts', import.meta.url)), logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error: console.error } }),
  ]);
  const worker = await Worker.create({
    connection: env.nativeConnection,
    namespace: 'default',
    taskQueue: TASKS_QUEUE,
    workflowBundle,
    activities: createReportActivities(),
  });
  const running = worker.run();
  try {
    const base: BaseContext = {
      address: env.address,
      metricsUrl: external ? (process.env.BENCH_TEMPORAL_METRICS_URL ?? '') : `http://127.0.0.1:${metricsPort}/metrics`,
      client: env.client,
      tasks: new TaskClient(env.client),
      nativeConnection: env.nativeConnection,
      workflowBundle,
      timeTrivialRoundTrip: () => timeTrivialRoundTrip(env.client),
      log,
    };
    // Warm up the worker's workflow cache and the server's queues before measuring anything.
    await pool(Array.from({ length: 20 }, (_, i) => i), 4, async (i) => {
      await env.client.workflow.execute('trivialWorkflow', { taskQueue: TASKS_QUEUE, workflowId: `bench-warmup-${Date.now()}-${i}` });
    });
    const trivialPerSecond = await trivialBaseline(base);
    const roundTrip = await trivialRoundTrip(env.client);
    const ctx: BenchContext = { ...base, trivialPerSecond, trivialRoundTrip: roundTrip };
    log(`engine baseline: ${round(trivialPerSecond)} trivial workflows/s (${TASKS} workflows, ${BASELINE_CONCURRENCY} at a time)`);
    log(`engine round trip: p50 ${roundTrip.p50} ms, p99 ${roundTrip.p99} ms (${roundTrip.n} trivial workflows, one at a time)`);
    const report: Record<string, unknown> = {};
    if (ONLY.has('core')) report.core = await coreThroughput(ctx);
    for (const [name, file, fn] of [
      ['http', './http.ts', 'benchHttp'],
      ['pull', './pull.ts', 'benchPull'],
      ['ssh', './ssh.ts', 'benchSsh'],
      ['workspace', './workspace.ts', 'benchWorkspace'],
      ['reconnect', './reconnect.ts', 'benchReconnect'],
    ] as const) {
      if (!ONLY.has(name)) continue;
      if (!existsSync(fileURLToPath(new URL(file, import.meta.url)))) continue;
      const module = (await import(file)) as Record<string, (ctx: BenchContext) => Promise<unknown>>;
      report[name] = await module[fn]!(ctx);
    }
    console.log(JSON.stringify(report, null, 2));
  } finally {
    worker.shutdown();
    await running;
    await env.teardown();
  }
}

main().catch((error: unknown) => {
  console.error(error);
  process.exit(1);
});
