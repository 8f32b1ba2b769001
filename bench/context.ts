// What every benchmark gets from the runner: one dev server, one bundle, the engine's baseline.
import type { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import type { TaskClient } from '../src/task-client';
import type { Summary } from './stats';

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
  /** A trivial workflow's round trip (start → result, one at a time) on this server, measured first. */
  trivialRoundTrip: Summary;
  /** One trivial round trip now, ms: interleaved with a figure's own samples, both see the same moments. */
  timeTrivialRoundTrip(): Promise<number>;
  log(line: string): void;
}
