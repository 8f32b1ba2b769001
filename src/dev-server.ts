// An embedded Temporal dev server with Drover's search attributes registered: used by
// `drover dev`, the test suite's global setup and the benchmarks.
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { SA } from './names';
import { ensureTemporalCli } from './temporal-cli';

export interface DevServerOptions {
  /** On-disk SQLite database; in memory when omitted. */
  dbFilename?: string;
  port?: number;
  /** Web UI port; no UI when omitted. */
  uiPort?: number;
  namespace?: string;
  /** Port of the server's Prometheus `/metrics` (persistence requests and the like); none when omitted. */
  metricsPort?: number;
  /** More dynamic config, over Drover's own (a test's visibility rate limit, say). */
  dynamicConfig?: Readonly<Record<string, boolean | number | string>>;
}

/**
 * Dynamic config Drover needs of its Temporal server: task-queue priority (the new matcher) and
 * fairness across repositories, both off by default in server 1.29; and one partition per task
 * queue, without which a queue's backlog is spread over four partitions polled at random and
 * offers of one priority and repository no longer come out oldest first. One partition matches
 * hundreds of tasks a second, far more than agents that run for minutes take. A cluster sets the
 * same in its dynamic config file (docker/temporal-dynamicconfig.yaml).
 */
export const DROVER_DYNAMIC_CONFIG: Readonly<Record<string, boolean | number | string>> = {
  'matching.useNewMatcher': true,
  'matching.enableFairness': true,
  'matching.numTaskqueueReadPartitions': 1,
  'matching.numTaskqueueWritePartitions': 1,
};

export async function startDevServer(options: DevServerOptions = {}): Promise<TestWorkflowEnvironment> {
  const cli = ensureTemporalCli();
  return TestWorkflowEnvironment.createLocal({
    server: {
      executable: cli ? { type: 'existing-path', path: cli } : { type: 'cached-download' },
      searchAttributes: Object.values(SA),
      dbFilename: options.dbFilename,
      port: options.port,
      ui: options.uiPort !== undefined,
      uiPort: options.uiPort,
      namespace: options.namespace,
      extraArgs: [
        '--log-level',
        'error',
        ...Object.entries({ ...DROVER_DYNAMIC_CONFIG, ...options.dynamicConfig }).flatMap(([key, value]) => ['--dynamic-config-value', `${key}=${JSON.stringify(value)}`]),
        ...(options.metricsPort ? ['--metrics-port', String(options.metricsPort)] : []),
      ],
    },
  });
}
