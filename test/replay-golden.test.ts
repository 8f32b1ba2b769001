// The committed histories of the main paths (test/golden-histories/) replay against the current
// workflow code: a change that would break tasks already running fails here, and needs a patch
// (workflow.patched) rather than a new golden. Add goldens for new paths; never rewrite old ones.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from '@temporalio/worker';
import { expect, inject, test } from 'vitest';
import { fromGoldenJson, GOLDEN_DIR } from './support/histories';

const goldens = readdirSync(GOLDEN_DIR).filter((file) => file.endsWith('.json'));

test('the committed golden histories are there', () => {
  expect(goldens.map((file) => file.replace(/\.json$/, ''))).toEqual(
    expect.arrayContaining(['ssh-match', 'host-lost', 'http-pull', 'assign-host', 'lease-lapse', 'cancel-pull', 'cancel-ssh', 'ssh-reattach', 'pull-run-timeout', 'cancel-pull-grace', 'pull-offer-claim', 'pull-offer-assign-agent', 'ssh-match-offer-withdrawn', 'pull-lapse-late-result', 'pull-offer-claim-tally-by-activities', 'legacy-tally-before-forwarding', 'legacy-tally-forwarding', 'tally-tells-by-updates']),
  );
});

test.each(goldens)('%s replays against the current workflow code', async (file) => {
  const { workflowId, history } = JSON.parse(readFileSync(join(GOLDEN_DIR, file), 'utf8')) as { workflowId: string; history: unknown };
  await Worker.runReplayHistory({ workflowBundle: { codePath: inject('workflowBundlePath') } }, fromGoldenJson(history), workflowId);
});
