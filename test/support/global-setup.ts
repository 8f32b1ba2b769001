// Starts one real Temporal dev server (the provisioned CLI, Drover's search attributes
// registered) and bundles the workflow code once, for every test file of the run.
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { startDevServer } from '../../src/dev-server';
import { bundleWorkflows } from '../../src/workers/task-worker';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    workflowBundlePath: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const [env, bundle] = await Promise.all([startDevServer(), bundleWorkflows()]);
  const dir = join(tmpdir(), `drover-test-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const bundlePath = join(dir, 'workflow-bundle.js');
  writeFileSync(bundlePath, bundle.code);
  project.provide('temporalAddress', env.address);
  project.provide('workflowBundlePath', bundlePath);
  return async () => {
    await env.teardown();
  };
}
