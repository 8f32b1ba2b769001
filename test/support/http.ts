// The HTTP tests' harness: a namespace of their own on the shared dev server (so their task worker,
// with the report sinks pointed at a fake Forgejo, is the only one serving their tasks), the task
// worker, and apps built with buildApp — through inject() or listening on 127.0.0.1.
import { randomUUID } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common/lib/time';
import { NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { inject } from 'vitest';
import { createReportActivities, type TaskEventSink } from '../../src/activities/report';
import { reportSinksFromConfig } from '../../src/activities/sinks';
import { buildApp, type AppDeps } from '../../src/api/app';
import { parseConfig, type DroverConfig } from '../../src/config';
import { TaskClient } from '../../src/task-client';
import { registerSearchAttributes } from '../../src/temporal-connection';
import { createTaskWorker } from '../../src/workers/task-worker';

export const ADMIN = 'admin-token-for-tests';
export const SECRET = 'webhook-secret-for-tests';
export const FORGEJO_TOKEN = 'forgejo-test-token';
export const adminAuth = { authorization: `Bearer ${ADMIN}` };

let quieted = false;
function quietRuntime(): void {
  if (quieted) return;
  quieted = true;
  try {
    Runtime.install({ logger: { log: () => {}, trace: () => {}, debug: () => {}, info: () => {}, warn: () => {}, error: () => {} } });
  } catch {
    // already installed by another helper in this process
  }
}

export interface Harness {
  namespace: string;
  client: Client;
  tasks: TaskClient;
  config: DroverConfig;
  /** Starts a task worker whose report sinks follow `config` (or the given sinks). */
  startWorker(sinks?: TaskEventSink[]): Promise<Worker>;
  app(overrides?: Partial<AppDeps>): Promise<FastifyInstance>;
  close(): Promise<void>;
}

/** Test config: raw YAML-like object merged over sensible test defaults. */
export function testConfig(namespace: string, raw: Record<string, unknown> = {}): DroverConfig {
  const base: Record<string, unknown> = {
    temporal: { address: inject('temporalAddress'), namespace },
    api: { adminToken: ADMIN, publicUrl: 'http://drover.test', maxDequeueWait: '20s', dequeuePollInterval: '100ms', temporalUiUrl: 'http://ui.test' },
    webhook: { secret: SECRET },
    types: ['dev', 'reviewer', 'boss'],
    logins: { 'drover-dev': 'dev', 'drover-reviewer': 'reviewer', 'drover-boss': 'boss' },
    tasks: { matchWindow: '60s', lease: '30s' },
    agents: [],
  };
  const merged = { ...base };
  for (const [key, value] of Object.entries(raw)) {
    const previous = merged[key];
    merged[key] =
      previous && typeof previous === 'object' && !Array.isArray(previous) && value && typeof value === 'object' && !Array.isArray(value)
        ? { ...(previous as object), ...(value as object) }
        : value;
  }
  return parseConfig(merged, {});
}

export async function startHarness(raw: Record<string, unknown> = {}): Promise<Harness> {
  quietRuntime();
  const address = inject('temporalAddress');
  const namespace = `drover-http-${randomUUID().slice(0, 8)}`;
  const connection = await Connection.connect({ address });
  await connection.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs('1 day') });
  await registerSearchAttributes(connection, namespace);
  const nativeConnection = await NativeConnection.connect({ address });
  const client = new Client({ connection, namespace });
  const config = testConfig(namespace, raw);
  const workers: Worker[] = [];
  const runs: Promise<void>[] = [];
  const apps: FastifyInstance[] = [];
  return {
    namespace,
    client,
    tasks: new TaskClient(client),
    config,
    async startWorker(sinks) {
      const worker = await createTaskWorker({
        connection: nativeConnection,
        namespace,
        workflowBundle: { codePath: inject('workflowBundlePath') },
        activities: createReportActivities(sinks ?? reportSinksFromConfig(config, client)),
      });
      workers.push(worker);
      runs.push(worker.run());
      return worker;
    },
    async app(overrides = {}) {
      const app = await buildApp({ config, client, logger: false, ...overrides });
      apps.push(app);
      return app;
    },
    async close() {
      for (const app of apps) await app.close().catch(() => undefined);
      for (const worker of workers) if (worker.getState() === 'RUNNING') worker.shutdown();
      await Promise.allSettled(runs);
      await nativeConnection.close();
      await connection.close();
    },
  };
}

/** A pull agent's credentials for the test config. */
export function agent(id: string, types: string[], token = `token-of-${id}-0123456789`) {
  return { config: { id, token, types }, auth: { authorization: `Bearer ${token}` }, id, token, types };
}

type Injectable = Pick<FastifyInstance, 'inject'>;

/** GET /api/v1/tasks/dequeue through inject(). */
export function dequeue(app: Injectable, who: { id: string; auth: Record<string, string> }, waitSeconds: number) {
  return app.inject({ method: 'GET', url: `/api/v1/tasks/dequeue?agent_id=${who.id}&wait=${waitSeconds}`, headers: who.auth });
}

/** POST /api/v1/tasks (admin): a hand-made task. */
export async function enqueue(app: Injectable, body: Record<string, unknown>): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/api/v1/tasks', headers: adminAuth, payload: body });
  if (res.statusCode !== 201) throw new Error(`enqueue: ${res.statusCode} ${res.body}`);
  return res.json().task_id as string;
}

export function taskUrl(taskId: string, action?: string): string {
  return `/api/v1/tasks/${encodeURIComponent(taskId)}${action ? `/${action}` : ''}`;
}
