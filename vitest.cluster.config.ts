// The cluster tier (`npm run test:cluster`): the tests below against Temporal server 1.29.1 on
// PostgreSQL, set up by scripts/cluster.sh, where visibility and matching behave as on a
// production cluster (see the README's "Cluster tier"). Not part of `npm test` or CI.
import { defineConfig } from 'vitest/config';

export const FAULTS = 'test/cluster/faults.cluster.ts';

export default defineConfig({
  test: {
    include: [
      'test/task-workflow.test.ts',
      'test/http-agents.test.ts',
      'test/task-race.test.ts',
      'test/pull-matching.test.ts',
      // Named *.cluster.ts, not *.test.ts, so that `npm test` (which runs test/**/*.test.ts on
      // the dev server) leaves them out.
      'test/cluster/**/*.cluster.ts',
    ],
    // Run alone afterwards (vitest.cluster-faults.config.ts): they stop the server under everyone.
    exclude: [FAULTS],
    globalSetup: ['test/support/cluster-setup.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: 'forks',
    reporters: ['default'],
  },
});
