// The workflow worker: runs task workflows (and, with the HTTP issue, their bookkeeping activities).
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, NativeConnection, Worker, type WorkerOptions } from '@temporalio/worker';
import { TASKS_QUEUE } from '../names';
import { createReportActivities } from '../activities/report';

export const WORKFLOWS_PATH = fileURLToPath(new URL('../workflows/index.ts', import.meta.url));

/** Bundles the workflow code once (tests and `drover dev` share one bundle across workers). */
export async function bundleWorkflows(): Promise<{ code: string }> {
  return bundleWorkflowCode({ workflowsPath: WORKFLOWS_PATH, logger: quietBundlerLogger });
}

const quietBundlerLogger = {
  log: () => {},
  trace: () => {},
  debug: () => {},
  info: () => {},
  warn: (message: string) => process.stderr.write(`workflow bundler: ${message}\n`),
  error: (message: string) => process.stderr.write(`workflow bundler: ${message}\n`),
};

export interface TaskWorkerOptions {
  connection: NativeConnection;
  namespace: string;
  workflowBundle?: { code: string } | { codePath: string };
  activities?: WorkerOptions['activities'];
  identity?: string;
}

export async function createTaskWorker(options: TaskWorkerOptions): Promise<Worker> {
  return Worker.create({
    connection: options.connection,
    namespace: options.namespace,
    taskQueue: TASKS_QUEUE,
    // Bundled here with a quiet logger, rather than by Worker.create, whose bundler logs every module.
    workflowBundle: options.workflowBundle ?? (await bundleWorkflows()),
    activities: options.activities ?? createReportActivities(),
    ...(options.identity ? { identity: options.identity } : {}),
  });
}
