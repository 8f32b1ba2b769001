// What every benchmark gets from the runner: one dev server, one bundle, the engine's baseline.
import type { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import type { TaskClient } from '../src/task-client';

export interface BenchContext {
  address: string;
  client: Client;
  tasks: TaskClient;
  nativeConnection: NativeConnection;
  workflowBundle: { code: string };
  /** The dev server's Prometheus metrics (persistence requests). */
  metricsUrl: string;
  /** Trivial workflows started and completed per second on this server, measured first. */
  trivialPerSecond: number;
  log(line: string): void;
}
