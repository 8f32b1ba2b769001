// Workspaces on an SSH host (real OpenSSH, real git): the runner makes the task's worktree over
// SSH, the agent changes files and commits in it, and Drover pushes and reports what the remote
// has. Two attempts of one repository run at once on one host without interfering.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunContext } from '../src/activities/runner';
import type { TaskInput } from '../src/model';
import { runKey } from '../src/run/detached';
import { SshRunner } from '../src/ssh/runner';
import { sshTarget } from '../src/workers/ssh-hosts';
import { GIT_IDENTITY, GitRemotes, git } from './support/git';
import { runContext } from './support/run-context';
import { SshdFleet } from './support/sshd';

let fleet: SshdFleet;
const remotes = new GitRemotes();

beforeAll(async () => {
  fleet = await SshdFleet.start(1, 'wshost');
});
afterAll(async () => {
  await fleet?.stop();
});

/**
 * An agent that really works in its checkout: writes a file named by its task, commits it, and
 * declares the commit it made. It also records where it ran and what it was told.
 */
const AGENT_SCRIPT = [
  'set -e',
  'cat > /dev/null',
  'printf "%s\\n" "$DROVER_TASK_ID" > "work-$DROVER_NUMBER.txt"',
  'env | grep "^DROVER_\\|^GIT_" | sort > "$DROVER_WORKSPACE/../$DROVER_NUMBER.env"',
  'pwd > "$DROVER_WORKSPACE/../$DROVER_NUMBER.cwd"',
  'git add -A && git commit -q -m "work on $DROVER_NUMBER"',
  'sleep 0.5',
  'printf \'{"outcome":"success","summary":"committed","branch":"%s","rev":"%s"}\\n\' "$DROVER_BRANCH" "$(git rev-parse HEAD)"',
].join('\n');

function runner() {
  const config = fleet.hostConfig('wshost-1', {
    types: ['dev'],
    agents: { dev: { provider: 'command', command: ['env', ...Object.entries(GIT_IDENTITY).map(([k, v]) => `${k}=${v}`), 'sh', '-c', AGENT_SCRIPT] } },
  });
  return new SshRunner({
    target: sshTarget(config),
    workdir: config.workdir,
    agents: config.agents,
    killGraceMs: 1_000,
    sessionResume: 'never',
    workspaces: { push: 'auto', keepFailedMs: 3_600_000 },
  });
}

function context(number: number, repo: string): { ctx: RunContext; output: string[] } {
  const taskId = `implement:${repo.replace('/', ':')}:${number}`;
  const input: TaskInput = { agentType: 'dev', kind: 'implement', repo, number, title: 't', prompt: 'do it', checkout: { remote: remotes.path(repo) } };
  return runContext({ taskId, hostId: 'wshost-1', input, runKey: runKey(taskId, 'run-1', 1) });
}

describe('workspaces on an SSH host', () => {
  it('the agent works and commits in its own worktree; Drover pushes the task branch and reports the remote’s rev', async () => {
    const base = remotes.create('acme/api');
    const { ctx, output } = context(11, 'acme/api');
    const result = await runner().run(ctx);
    expect(result.outcome, result.summary).toBe('success');
    const tip = remotes.tip('acme/api', 'drover/implement-11');
    expect(tip).toMatch(/^[0-9a-f]{40}$/);
    expect(result).toMatchObject({ branch: 'drover/implement-11', rev: tip, details: { workspace: { push: 'pushed', kept: false } } });
    expect(git(remotes.path('acme/api'), 'show', `${tip}:work-11.txt`)).toBe(ctx.taskId);
    expect(git(remotes.path('acme/api'), 'rev-parse', `${tip}^`)).toBe(base);
    const worktrees = join(fleet.host('wshost-1').workdir, '.drover', 'worktrees');
    const cwd = readFileSync(join(worktrees, '11.cwd'), 'utf8').trim();
    expect(cwd).toBe(join(worktrees, ctx.runKey));
    const env = readFileSync(join(worktrees, '11.env'), 'utf8');
    expect(env).toContain('DROVER_BRANCH=drover/implement-11');
    expect(env).toContain('DROVER_BASE=main');
    expect(env).toContain(`DROVER_HEAD=${base}`);
    expect(env).not.toContain('GIT_ASKPASS');
    // The worktree is gone once the work is pushed.
    expect(existsSync(cwd)).toBe(false);
    expect(output.join('')).toContain('[drover] workspace');
  });

  it('two attempts of one repository at once on one host: both branches pushed, neither sees the other’s files', async () => {
    remotes.create('acme/pair');
    const runs = [21, 22].map((n) => context(n, 'acme/pair'));
    const results = await Promise.all(runs.map(({ ctx }) => runner().run(ctx)));
    for (const [i, n] of [21, 22].entries()) {
      const tip = remotes.tip('acme/pair', `drover/implement-${n}`);
      expect(results[i]).toMatchObject({ outcome: 'success', branch: `drover/implement-${n}`, rev: tip });
      const files = git(remotes.path('acme/pair'), 'ls-tree', '--name-only', tip).split('\n');
      expect(files.sort()).toEqual(['README.md', `work-${n}.txt`]);
    }
  });
});
