// Drover against a Temporal server the test stops and starts: an API process (buildApp, through
// inject()) and a task worker of its own, with the client options Drover runs with. Used by the
// dev-server outage test (test/outage.test.ts) and by the cluster tier's fault tests
// (test/cluster/faults.cluster.ts), where the server is Temporal on PostgreSQL.
import { Connection } from '@temporalio/client';
import { NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { expect, inject } from 'vitest';
import { buildApp } from '../../src/api/app';
import { createReportActivities } from '../../src/activities/report';
import type { DroverConfig } from '../../src/config';
import { TaskClient } from '../../src/task-client';
import { connectClient } from '../../src/temporal-connection';
import { createTaskWorker } from '../../src/workers/task-worker';
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

/** `raw` over the test config; `types` are added to the config's own (its logins name them). */
export async function startOutageHarness(address: string, namespace: string, raw: Record<string, unknown> & { types?: string[] }): Promise<OutageHarness> {
  const config = testConfig(namespace, { ...raw, types: [...new Set(['dev', 'reviewer', 'boss', ...(raw.types ?? [])])] });
  config.temporal.address = address;
  const { client, connection } = await connectClient(config.temporal);
  const nativeConnection = await NativeConnection.connect({ address });
  const worker: Worker = await createTaskWorker({
    connection: nativeConnection,
    namespace,
    workflowBundle: { codePath: inject('workflowBundlePath') },
    activities: createReportActivities([]),
  });
  const running = worker.run();
  const app = await buildApp({ config, client, logger: false });
  return {
    app,
    tasks: new TaskClient(client),
    config,
    async close() {
      await app.close().catch(() => undefined);
      if (worker.getState() === 'RUNNING') worker.shutdown();
      await running.catch(() => undefined);
      await nativeConnection.close().catch(() => undefined);
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
  const h = await startOutageHarness(address, namespace, {
    types: [type],
    tasks: { lease: `${outage.leaseMs}ms`, claimConfirm: `${outage.leaseMs}ms` },
    agents: [who.config],
  });
  try {
    const { app, tasks } = h;
    const taskId = await enqueue(app, { agent_type: type, title: 'finishes during an outage', prompt: 'p' });
    const got = await dequeue(app, who, 20);
    expect(got.statusCode, got.body).toBe(200);
    const { attempt } = got.json();
    const beat = await app.inject({ method: 'POST', url: taskUrl(taskId, 'heartbeat'), headers: who.auth, payload: { agent_id: who.id, attempt } });
    expect(beat.statusCode).toBe(200);

    // Temporal goes down; the agent's command finishes meanwhile, and its report cannot get through.
    await outage.down();
    const complete = () =>
      app.inject({ method: 'POST', url: taskUrl(taskId, 'complete'), headers: who.auth, payload: { agent_id: who.id, attempt, summary: 'finished while Temporal was down' } });
    expect((await complete()).statusCode).toBe(503);
    await new Promise((resolve) => setTimeout(resolve, outage.outageMs));
    // Both watched from before the start: `up` may return well after the server answers.
    const answering = serverAnswers(address);
    const ready = waitFor(async () => ((await app.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 ? Date.now() : undefined), '/readyz to answer 200', 180_000);
    await outage.up();
    const serverBackAt = await answering;

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
    return { readyAfterServerMs: (await ready) - serverBackAt, reportTakenAfterServerMs: reportTakenAt - serverBackAt };
  } finally {
    await h.close();
  }
}
