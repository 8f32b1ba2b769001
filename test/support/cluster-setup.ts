// Global setup of the cluster tier (vitest.cluster.config.ts): Temporal server 1.29.1 on
// PostgreSQL, set up by scripts/cluster.sh, in place of the dev server; the tests get the same
// provided values as from global-setup.ts.
// - DROVER_TEST_TEMPORAL_ADDRESS set: that server is used as it is (namespaces and search
//   attributes already set up, e.g. by `scripts/cluster.sh start` elsewhere).
// - Otherwise the script builds the server if needed and reuses a running cluster as it is, or
//   starts one from an empty state dir (about 15 s) and stops it after the run, unless
//   DROVER_CLUSTER_KEEP=1.
import { mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TestProject } from 'vitest/node';
import { bundleWorkflows } from '../../src/workers/task-worker';
import { clusterScript as cluster, runClusterScript as run } from './cluster-script';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    workflowBundlePath: string;
    /** The namespace scripts/cluster.sh creates beside `default` (DROVER_CLUSTER_NAMESPACE). */
    clusterNamespace: string;
    /** True when the server is the one scripts/cluster.sh runs here, which the fault tests stop and start. */
    clusterControlled: boolean;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const bundling = bundleWorkflows();
  bundling.catch(() => undefined); // awaited below; a failed cluster start must not leave it unhandled
  let startedHere = false;
  let address = process.env.DROVER_TEST_TEMPORAL_ADDRESS;
  if (!address) {
    await cluster('build');
    const running = (await run('status')).status === 0;
    // A cluster of its own starts from empty databases: open workflows of an earlier run (older
    // workflow code) would otherwise come back to this run's workers.
    if (!running) await cluster('destroy');
    await cluster('start');
    startedHere = !running;
    const env = Object.fromEntries(
      (await cluster('env'))
        .split('\n')
        .filter((line) => line.includes('='))
        .map((line) => [line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1)]),
    );
    address = env.DROVER_TEST_TEMPORAL_ADDRESS;
    if (!address) throw new Error('scripts/cluster.sh env printed no DROVER_TEST_TEMPORAL_ADDRESS');
  }
  const bundle = await bundling;
  const dir = join(tmpdir(), `drover-test-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  const bundlePath = join(dir, 'workflow-bundle.js');
  writeFileSync(bundlePath, bundle.code);
  project.provide('temporalAddress', address);
  project.provide('workflowBundlePath', bundlePath);
  project.provide('clusterNamespace', process.env.DROVER_CLUSTER_NAMESPACE || 'drover');
  project.provide('clusterControlled', !process.env.DROVER_TEST_TEMPORAL_ADDRESS);
  return async () => {
    if (startedHere && process.env.DROVER_CLUSTER_KEEP !== '1') await cluster('stop');
  };
}
