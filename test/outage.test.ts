// A Temporal outage longer than a pull agent's lease, on a dev server of this file's own (on disk,
// so that it restarts with its state): the agent that finished during the outage reports when the
// server is back, and its work is not run again.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, expect, inject, test } from 'vitest';
import { buildApp } from '../src/api/app';
import { createReportActivities } from '../src/activities/report';
import { startDevServer } from '../src/dev-server';
import { freePort } from './support/process';
import { TaskClient } from '../src/task-client';
import { connectClient } from '../src/temporal-connection';
import { createTaskWorker } from '../src/workers/task-worker';
import { agent, dequeue, enqueue, taskUrl, testConfig } from './support/http';
import { waitFor } from './support/temporal';

const AGENT = agent('outage-1', ['dev']);
const LEASE_MS = 5_000;
const OUTAGE_MS = 15_000;

let dir: string;
let port: number;
let server: TestWorkflowEnvironment | undefined;
let worker: Worker | undefined;
let workerRun: Promise<void> | undefined;
let nativeConnection: NativeConnection | undefined;
let app: FastifyInstance | undefined;
let closeClient: (() => Promise<void>) | undefined;

const startServer = async () => {
  server = await startDevServer({ dbFilename: join(dir, 'temporal.db'), port });
};

beforeAll(async () => {
  try {
    // Quiet: the Rust core warns of every poll it retries while the server is down.
    Runtime.install({
      logger: { log: () => {}, trace: () => {}, debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
      telemetryOptions: { logging: { filter: 'ERROR', forward: {} } },
    });
  } catch {
    // installed already
  }
  dir = mkdtempSync(join(tmpdir(), 'drover-outage-'));
  port = await freePort();
  await startServer();
});

afterAll(async () => {
  await app?.close().catch(() => undefined);
  if (worker?.getState() === 'RUNNING') worker.shutdown();
  await workerRun?.catch(() => undefined);
  await nativeConnection?.close().catch(() => undefined);
  await closeClient?.().catch(() => undefined);
  await server?.teardown().catch(() => undefined);
  rmSync(dir, { recursive: true, force: true });
});

test('Temporal down for longer than the lease: the result the agent kept is taken when it is back, and the task is not run again', async () => {
  const config = testConfig('default', { tasks: { lease: `${LEASE_MS}ms`, claimConfirm: `${LEASE_MS}ms` }, agents: [AGENT.config] });
  config.temporal.address = `127.0.0.1:${port}`;
  const { client, connection } = await connectClient(config.temporal);
  closeClient = () => connection.close();
  nativeConnection = await NativeConnection.connect({ address: config.temporal.address });
  worker = await createTaskWorker({
    connection: nativeConnection,
    namespace: 'default',
    workflowBundle: { codePath: inject('workflowBundlePath') },
    activities: createReportActivities([]),
  });
  workerRun = worker.run();
  app = await buildApp({ config, client, logger: false });
  const tasks = new TaskClient(client);

  const taskId = await enqueue(app, { agent_type: 'dev', title: 'finishes during an outage', prompt: 'p' });
  const got = await dequeue(app, AGENT, 20);
  expect(got.statusCode).toBe(200);
  const { attempt } = got.json();
  const beat = await app.inject({ method: 'POST', url: taskUrl(taskId, 'heartbeat'), headers: AGENT.auth, payload: { agent_id: AGENT.id, attempt } });
  expect(beat.statusCode).toBe(200);

  // Temporal goes down; the agent's command finishes meanwhile, and its report cannot get through.
  await server!.teardown();
  server = undefined;
  const complete = () =>
    app!.inject({
      method: 'POST',
      url: taskUrl(taskId, 'complete'),
      headers: AGENT.auth,
      payload: { agent_id: AGENT.id, attempt, summary: 'finished while Temporal was down' },
    });
  expect((await complete()).statusCode).toBe(503);
  await new Promise((resolve) => setTimeout(resolve, OUTAGE_MS)); // three leases
  await startServer();
  const restartedAt = Date.now();

  // The workflow worker is back before the agent's report gets through (on a cluster, the API's
  // reconnect took longer than the workers'): the lease timer fires, long after the lease's end.
  const woken = await waitFor(async () => {
    const now = await tasks.status(taskId);
    return Date.parse(now.updatedAt) >= restartedAt ? now : undefined;
  }, 'the task to notice the lapsed lease', 60_000);
  expect(woken).toMatchObject({ state: 'running', lostAttempts: 0 }); // one more lease, not a lost attempt

  // As `drover agent` does: the same report again until the server answers it.
  const answer = await waitFor(async () => {
    const res = await complete();
    return res.statusCode === 503 ? undefined : res;
  }, 'the report to get through', 60_000);
  expect(answer.statusCode, answer.body).toBe(200);
  const status = await tasks.result(taskId);
  expect(status).toMatchObject({ state: 'completed', lostAttempts: 0, result: { summary: 'finished while Temporal was down' } });
  expect(status.attempts).toHaveLength(1);
}, 120_000);
