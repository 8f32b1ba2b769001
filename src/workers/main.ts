// `drover worker`: the workflow worker, plus the workers of every SSH host in the config.
import type { Client } from '@temporalio/client';
import type { NativeConnection, Worker } from '@temporalio/worker';
import type { DroverConfig } from '../config';
import type { Logger } from '../log';
import { createTaskWorker } from './task-worker';
import { createReportActivities } from '../activities/report';
import { reportSinksFromConfig } from '../activities/sinks';

export interface RunningWorkers {
  /** Resolves when every worker has stopped. */
  done: Promise<void>;
  shutdown(): Promise<void>;
}

export async function startWorkers(deps: {
  config: DroverConfig;
  client: Client;
  connection: NativeConnection;
  log: Logger;
  workflowBundle?: { code: string } | { codePath: string };
}): Promise<RunningWorkers> {
  const { config, connection, log } = deps;
  const workers: Worker[] = [
    await createTaskWorker({
      connection,
      namespace: config.temporal.namespace,
      workflowBundle: deps.workflowBundle,
      // Task events become Forgejo comments and callback POSTs (retried until delivered).
      activities: createReportActivities(reportSinksFromConfig(config)),
    }),
  ];
  log.info({ queues: ['drover.tasks'] }, 'workflow worker started');
  const done = Promise.all(workers.map((w) => w.run())).then(() => undefined);
  return {
    done,
    async shutdown() {
      for (const worker of workers) if (worker.getState() === 'RUNNING') worker.shutdown();
      await done;
    },
  };
}
