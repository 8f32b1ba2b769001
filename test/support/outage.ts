// Drover against a Temporal server the test stops and starts: an API process (buildApp, through
// inject()) and a task worker of its own, with the client options Drover runs with. Used by the
// dev-server outage test (test/outage.test.ts) and by the cluster tier's fault tests
// (test/cluster/faults.cluster.ts), where the server is Temporal on PostgreSQL.
import { Connection } from '@temporalio/client';
import { NativeConnection, Runtime } from '@temporalio/worker';
import { pino } from 'pino';
import type { FastifyInstance } from 'fastify';
import { expect, inject } from 'vitest';
import { buildApp } from '../../src/api/app';
import type { DroverConfig } from '../../src/config';
import { TaskClient } from '../../src/task-client';
import { connectClient, IDLE_PROBE_MS } from '../../src/temporal-connection';
import { startWorkers } from '../../src/workers/main';
import { agent, dequeue, enqueue, taskUrl, testConfig } from './http';
import { waitFor } from './temporal';

export interface OutageHarness {
  app: FastifyInstance;
  tasks: TaskClient;
  config: DroverConfig;
  close(): Promise<void>;
}

/** Quiet: the Rust core warns of every poll it retries while the server is down. */
export function quietCoreRuntime(): void {
  try {
    Runtime.install({
      logger: { log: () => {}, trace: () => {}, debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
      telemetryOptions: { logging: { filter: 'ERROR', forward: {} } },
    });
  } catch {
    // installed already
  }
}

/**
 * `raw` over the test config; `types` are added to the config's own (its logins name them). Wired
 * as `drover dev` is: the client's observer probes Temporal when idle, and the workflow worker and
 * the API's pull workers are renewed once it is reachable again.
 */
export async function startOutageHarness(address: string, namespace: string, raw: Record<string, unknown> & { types?: string[] }): Promise<OutageHarness> {
  const config = testConfig(namespace, { ...raw, types: [...new Set(['dev', 'reviewer', 'boss', ...(raw.types ?? [])])] });
  config.temporal.address = address;
  const { client, connection, temporalHealth } = await connectClient(config.temporal, { idleProbeIntervalMs: IDLE_PROBE_MS });
  // OUTAGE_LOG=info: the API's and the workers' logs, for a run that went wrong.
  const log = pino({ level: process.env.OUTAGE_LOG ?? 'silent' });
  const workers = await startWorkers({
    config,
    client,
    connect: () => NativeConnection.connect({ address }),
    log,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    temporalHealth,
  });
  const app = await buildApp({ config, client, logger: process.env.OUTAGE_LOG ? log : false, temporalHealth });
  return {
    app,
    tasks: new TaskClient(client),
    config,
    async close() {
      await app.close().catch(() => undefined);
      await workers.shutdown().catch(() => undefined);
      temporalHealth.stop();
      await connection.close().catch(() => undefined);
    },
  };
}

/** Resolves once a fresh connection to `address` is answered: the server is back. */
export async function serverAnswers(address: string, timeoutMs = 180_000): Promise<number> {
  return waitFor(
    async () => {
      const connection = await Connection.connect({ address, connectTimeout: 1_000 });
      try {
        await connection.workflowService.getSystemInfo({});
        return Date.now();
      } finally {
        await connection.close();
      }
    },
    `Temporal at ${address} to answer`,
    timeoutMs,
  );
}

export interface OutageFigures {
  /** From the server answering a fresh connection to the API's /readyz answering 200. */
  readyAfterServerMs: number;
  /** From the server answering to the agent's kept report being taken. */
  reportTakenAfterServerMs: number;
  /** From the server answering to a task enqueued then reaching an agent that waited through the outage. */
  nextDequeuedAfterServerMs: number;
}

/**
 * Issue 11's case: Temporal down for longer than the agent's lease, while the agent's command
 * finishes. The result the agent kept is taken when the server is back, and the task is not run
 * again. `down`/`up` stop and start the server (`up` may resolve well after it answers).
 */
export async function finishesDuringOutage(
  address: string,
  namespace: string,
  type: string,
  outage: { leaseMs: number; outageMs: number; down: () => Promise<unknown>; up: () => Promise<unknown> },
): Promise<OutageFigures> {
  const who = agent(`outage-${type}`, [type]);
  // Of a type of its own: the first task, lapsed meanwhile, is never offered to it.
  const nextType = `${type}-next`;
  const waiter = agent(`outage-${nextType}`, [nextType]);
  const waitSeconds = Math.ceil(outage.outageMs / 1000) + 120;
  const h = await startOutageHarness(address, namespace, {
    types: [type, nextType],
    api: { maxDequeueWait: `${waitSeconds}s` },
    tasks: { lease: `${outage.leaseMs}ms`, claimConfirm: `${outage.leaseMs}ms` },
    agents: [who.config, waiter.config],
  });
  try {
    const { app, tasks } = h;
    const taskId = await enqueue(app, { agent_type: type, title: 'finishes during an outage', prompt: 'p' });
    const got = await dequeue(app, who, 20);
    expect(got.statusCode, got.body).toBe(200);
    const { attempt } = got.json();
    const beat = await app.inject({ method: 'POST', url: taskUrl(taskId, 'heartbeat'), headers: who.auth, payload: { agent_id: who.id, attempt } });
    expect(beat.statusCode).toBe(200);

    // Another agent waits through the outage: its queue's pollers back off while the server is down.
    const waiting = dequeue(app, waiter, waitSeconds);
    await new Promise((resolve) => setTimeout(resolve, 1_000)); // its queue's worker polls

    // Temporal goes down; the agent's command finishes meanwhile, and its report cannot get through.
    await outage.down();
    const complete = () =>
      app.inject({ method: 'POST', url: taskUrl(taskId, 'complete'), headers: who.auth, payload: { agent_id: who.id, attempt, summary: 'finished while Temporal was down' } });
    expect((await complete()).statusCode).toBe(503);
    await new Promise((resolve) => setTimeout(resolve, outage.outageMs));
    // Both watched from before the start: `up` may return well after the server answers.
    const answering = serverAnswers(address);
    const ready = waitFor(async () => ((await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 ? Date.now() : undefined), '/readyz to answer 200', 180_000);
    // Not awaited first: `up` may return seconds after the server answers (the cluster's script
    // waits for all of it), and what follows is timed from the answer.
    const starting = outage.up();
    starting.catch(() => undefined); // awaited at the end
    const serverBackAt = await answering;
    // Meanwhile, a task enqueued as soon as the API can: it reaches the agent that waited.
    const nextDispatch = (async () => {
      const nextTaskId = await waitFor(() => enqueue(app, { agent_type: nextType, title: 'after the outage', prompt: 'p' }).catch(() => undefined), 'the API to enqueue again', 60_000);
      const next = await waiting;
      const at = Date.now();
      expect(next.statusCode, next.body).toBe(200);
      expect(next.json()).toMatchObject({ task_id: nextTaskId, attempt: expect.any(Number) });
      const done = await app.inject({ method: 'POST', url: taskUrl(nextTaskId, 'complete'), headers: waiter.auth, payload: { agent_id: waiter.id, attempt: next.json().attempt, summary: 'done' } });
      expect(done.statusCode, done.body).toBe(200);
      return at;
    })();
    nextDispatch.catch(() => undefined); // awaited at the end; until then, not an unhandled rejection

    // The workflow worker is back before the agent's report gets through (on a cluster, the API's
    // reconnect took longer than the workers'): the lease timer fires, long after the lease's end.
    const woken = await waitFor(async () => {
      const now = await tasks.status(taskId);
      // Its last change before was the heartbeat, an outage earlier; a poll of the server may see it back up to a second late.
      return Date.parse(now.updatedAt) >= serverBackAt - 1_000 ? now : undefined;
    }, 'the task to notice the lapsed lease', 60_000);
    expect(woken).toMatchObject({ state: 'running', lostAttempts: 0 }); // one more lease, not a lost attempt

    // As `drover agent` does: the same report again until the server answers it.
    const answer = await waitFor(async () => {
      const res = await complete();
      return res.statusCode === 503 ? undefined : res;
    }, 'the report to get through', 60_000);
    const reportTakenAt = Date.now();
    expect(answer.statusCode, answer.body).toBe(200);
    const status = await tasks.result(taskId);
    expect(status).toMatchObject({ state: 'completed', lostAttempts: 0, result: { summary: 'finished while Temporal was down' } });
    expect(status.attempts).toHaveLength(1);
    const nextDequeuedAt = await nextDispatch;
    await starting;
    return {
      readyAfterServerMs: (await ready) - serverBackAt,
      reportTakenAfterServerMs: reportTakenAt - serverBackAt,
      nextDequeuedAfterServerMs: nextDequeuedAt - serverBackAt,
    };
  } finally {
    await h.close();
  }
}
