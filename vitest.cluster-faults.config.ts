// The cluster tier's fault tests (`npm run test:cluster`, after the rest of the tier): they stop
// and start Temporal and PostgreSQL under the tests, so they run alone, one file, one at a time.
import { defineConfig } from 'vitest/config';
import cluster, { FAULTS } from './vitest.cluster.config.ts';

export default defineConfig({ ...cluster, test: { ...cluster.test, include: [FAULTS], exclude: [], fileParallelism: false } });
