// `drover worker`: the workflow worker, plus the workers of every SSH host in the config.
import type { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import { durationMs, type DroverConfig, workspaceSettings } from '../config';
import type { Logger } from '../log';
import { bundleWorkflows, createTaskWorker } from './task-worker';
import { RenewableWorkers, renewAfterOutages } from './renewable-workers';
import { createReportActivities } from '../activities/report';
import { reportSinksFromConfig } from '../activities/sinks';
import { connectNative } from '../temporal-connection';
import type { TemporalCallObserver } from '../temporal-health';
import { TASKS_QUEUE } from '../names';
import { startSshHosts } from './ssh-hosts';

export interface RunningWorkers {
  /** Resolves when every worker has stopped. */
  done: Promise<void>;
  shutdown(): Promise<void>;
  /** Fresh pollers for the workflow worker and the SSH hosts: Temporal is reachable again after an outage (see RenewableWorkers). */
  renew(): Promise<void>;
}

export async function startWorkers(deps: {
  config: DroverConfig;
  client: Client;
  /** Opens the workflow worker's Temporal connection (again on each renewal). */
  connect: () => Promise<NativeConnection>;
  log: Logger;
  workflowBundle?: { code: string } | { codePath: string };
  /** Opens a Temporal connection for one SSH host's workers (default: from config.temporal). */
  connectHost?: () => Promise<NativeConnection>;
  /** The process's watch on Temporal: once it is reachable again after an outage, the workers are renewed. */
  temporalHealth?: TemporalCallObserver;
}): Promise<RunningWorkers> {
  const { config, log } = deps;
  // Bundled once: a renewal makes a new worker from the same code.
  const workflowBundle = deps.workflowBundle ?? (await bundleWorkflows());
  // Task events become Forgejo comments and callback POSTs (retried until delivered).
  const activities = createReportActivities(reportSinksFromConfig(config, deps.client));
  const workflowWorkers = new RenewableWorkers({ connect: deps.connect, log });
  const { done: workflowsDone } = await workflowWorkers.add(TASKS_QUEUE, (connection) =>
    createTaskWorker({ connection, namespace: config.temporal.namespace, workflowBundle, activities }),
  );
  log.info({ queues: [TASKS_QUEUE] }, 'workflow worker started');
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
    await workflowWorkers.close();
    throw error;
  });
  const renew = async () => {
    await Promise.all([workflowWorkers.renew(), sshHosts.renew()]);
  };
  // The SDK's pollers back off up to 10 s while Temporal is down: fresh ones once it is back.
  const stopRenewing = deps.temporalHealth && renewAfterOutages(deps.temporalHealth, renew);
  const done = Promise.all([workflowsDone, sshHosts.done]).then(() => undefined);
  return {
    done,
    async shutdown() {
      // Hosts first: their attempts still report to the workflows.
      await sshHosts.shutdown();
      stopRenewing?.();
      await workflowWorkers.close();
      await done;
    },
    renew,
  };
}
