// `drover worker`: the workflow worker, plus the workers of every SSH host in the config.
import type { Client } from '@temporalio/client';
import type { NativeConnection, Worker } from '@temporalio/worker';
import { durationMs, type DroverConfig, workspaceSettings } from '../config';
import type { Logger } from '../log';
import { createTaskWorker } from './task-worker';
import { createReportActivities } from '../activities/report';
import { reportSinksFromConfig } from '../activities/sinks';
import { connectNative } from '../temporal-connection';
import { startSshHosts } from './ssh-hosts';

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
  /** Opens a Temporal connection for one SSH host's workers (default: from config.temporal). */
  connectHost?: () => Promise<NativeConnection>;
}): Promise<RunningWorkers> {
  const { config, connection, log } = deps;
  const workers: Worker[] = [
    await createTaskWorker({
      connection,
      namespace: config.temporal.namespace,
      workflowBundle: deps.workflowBundle,
      // Task events become Forgejo comments and callback POSTs (retried until delivered).
      activities: createReportActivities(reportSinksFromConfig(config, deps.client)),
    }),
  ];
  log.info({ queues: ['drover.tasks'] }, 'workflow worker started');
  const workflowsDone = Promise.all(workers.map((w) => w.run())).then(() => undefined);
  // SSH hosts: each with its own Temporal connection, health check and presence.
  const sshHosts = await startSshHosts({
    hosts: config.hosts,
    client: deps.client,
    connect: deps.connectHost ?? (() => connectNative(config.temporal)),
    namespace: config.temporal.namespace,
    log,
    fenceGraceMs: durationMs(config.tasks.fenceGrace),
    workspaces: workspaceSettings(config),
  }).catch(async (error: unknown) => {
    for (const worker of workers) if (worker.getState() === 'RUNNING') worker.shutdown();
    await workflowsDone.catch(() => undefined);
    throw error;
  });
  const done = Promise.all([workflowsDone, sshHosts.done]).then(() => undefined);
  return {
    done,
    async shutdown() {
      // Hosts first: their attempts still report to the workflows.
      await sshHosts.shutdown();
      for (const worker of workers) if (worker.getState() === 'RUNNING') worker.shutdown();
      await done;
    },
  };
}
