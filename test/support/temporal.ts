// Test helpers around the shared dev server: connections, workers and small waits.
import { randomUUID } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { NativeConnection, Runtime, type Worker } from '@temporalio/worker';
import { inject } from 'vitest';
import type { Runner } from '../../src/activities/runner';
import { TaskClient } from '../../src/task-client';
import { HostWorkers } from '../../src/workers/host-worker';
import { createTaskWorker } from '../../src/workers/task-worker';

let runtimeQuieted = false;
function quietRuntime(): void {
  if (runtimeQuieted) return;
  runtimeQuieted = true;
  Runtime.install({ logger: { log: () => {}, trace: () => {}, debug: () => {}, info: () => {}, warn: () => {}, error: (m) => console.error(m) } });
}

export interface TestTemporal {
  client: Client;
  tasks: TaskClient;
  nativeConnection: NativeConnection;
  namespace: string;
  /** Starts a workflow worker on drover.tasks; stopped by close(). */
  startTaskWorker(): Promise<Worker>;
  /** Starts an SSH host's workers with an in-process runner; stopped by close(). */
  startHost(hostId: string, types: string[], slots: number, runner: Runner): Promise<HostWorkers>;
  close(): Promise<void>;
}

export async function connectTestTemporal(): Promise<TestTemporal> {
  quietRuntime();
  const address = inject('temporalAddress');
  const namespace = 'default';
  const connection = await Connection.connect({ address });
  const nativeConnection = await NativeConnection.connect({ address });
  const client = new Client({ connection, namespace });
  const workers: Array<{ run: Promise<void>; stop: () => Promise<void> | void }> = [];
  return {
    client,
    tasks: new TaskClient(client),
    nativeConnection,
    namespace,
    async startTaskWorker() {
      const worker = await createTaskWorker({ connection: nativeConnection, namespace, workflowBundle: { codePath: inject('workflowBundlePath') } });
      workers.push({ run: worker.run(), stop: () => worker.shutdown() });
      return worker;
    },
    async startHost(hostId, types, slots, runner) {
      const host = await HostWorkers.create({ connect: () => NativeConnection.connect({ address }), namespace, client, hostId, types, slots, runner });
      workers.push({ run: host.run(), stop: () => host.shutdown() });
      return host;
    },
    async close() {
      for (const w of workers) {
        try {
          await w.stop();
        } catch {
          // already stopped
        }
      }
      await Promise.allSettled(workers.map((w) => w.run));
      await nativeConnection.close();
      await connection.close();
    },
  };
}

/** A fresh agent type per test, so typed queues of different tests never meet. */
export function uniqueType(prefix = 'dev'): string {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

export function uniqueRepo(): string {
  return `acme/repo-${randomUUID().slice(0, 8)}`;
}

/** Polls `probe` until it returns a value other than undefined (liveness, not a timing assertion). */
export async function waitFor<T>(probe: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (error) {
      lastError = error;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}${lastError ? `: ${String(lastError)}` : ''}`);
}
