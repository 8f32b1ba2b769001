// Workspaces against real git: a bare remote, the shared mirror, a worktree per attempt at the
// right ref, pushing, checking results against the remote, and two attempts of one repository
// at once. The scripts run under the local /bin/sh here; ssh-workspace.test.ts runs them over SSH.
import { existsSync, mkdtempSync, readdirSync, readFileSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import type { TaskInput, TaskResult } from '../src/model';
import { runLocalScript } from '../src/run/local';
import { isSafeRefName, isSafeRemote, remoteUrl, workspacePlan, type WorkspacePlan } from '../src/workspace/plan';
import { verifiedResult, WorkspaceError, Workspaces, type WorkspaceSettings } from '../src/workspace/workspace';
import { commitFiles, git, GitRemotes } from './support/git';
import { HOSTILE_STRINGS } from './support/hostile';

const remotes = new GitRemotes();

function workspaces(settings: Partial<WorkspaceSettings> = {}) {
  const workdir = mkdtempSync(join(tmpdir(), 'drover-ws-'));
  return new Workspaces(runLocalScript, { workdir, push: 'auto', keepFailedMs: 3_600_000, ...settings });
}

function input(kind: TaskInput['kind'], repo: string, number: number, checkout: Partial<NonNullable<TaskInput['checkout']>> = {}): TaskInput {
  return { agentType: 'dev', kind, repo, number, title: 't', prompt: 'p', checkout: { remote: remotes.path(repo), ...checkout } };
}

const success = (summary = 'done'): TaskResult => ({ outcome: 'success', summary });

describe('workspace plan (pure)', () => {
  it('implement works on a task branch from the base; PR kinds on the head at the event sha; custom on its ref or nowhere', () => {
    const remote = 'https://forgejo.example.com/acme/web.git';
    expect(workspacePlan('implement:acme:web:42', { kind: 'implement', repo: 'acme/web', number: 42, checkout: { remote, base: 'main' } })).toEqual({
      repo: 'acme/web', remote, branch: 'drover/implement-42', base: 'main', pushes: true,
    });
    expect(workspacePlan('fix_ci:acme:web:7', { kind: 'fix_ci', repo: 'acme/web', number: 7, checkout: { remote, branch: 'feature/x', sha: 'ABCDEF1234567', base: 'main' } })).toEqual({
      repo: 'acme/web', remote, branch: 'feature/x', base: 'main', sha: 'abcdef1234567', pull: 7, pushes: true,
    });
    expect(workspacePlan('review:acme:web:7', { kind: 'review', repo: 'acme/web', number: 7, checkout: { remote, branch: 'feature/x', sha: 'abcdef1234567' } })).toEqual({
      repo: 'acme/web', remote, sha: 'abcdef1234567', pull: 7, pushes: false,
    });
    expect(workspacePlan('custom:1', { kind: 'custom', repo: 'acme/web', number: 0, checkout: { remote, ref: 'v1.2' } })).toEqual({ repo: 'acme/web', remote, ref: 'v1.2', pushes: false });
    expect(workspacePlan('custom:1', { kind: 'custom', repo: 'acme/web', number: 0, checkout: { remote } })).toBeUndefined();
    expect(workspacePlan('implement:x', { kind: 'implement', repo: '', number: 0, checkout: { remote } })).toBeUndefined();
    expect(workspacePlan('implement:x', { kind: 'implement', repo: 'acme/web', number: 1 })).toBeUndefined();
  });

  it('never takes a hostile branch, sha, ref or remote', () => {
    for (const bad of [...HOSTILE_STRINGS('/tmp/drover-pwned'), '-x', '--upload-pack=touch /tmp/p', 'a..b', 'a/.b', 'x.lock', 'a b', '@{-1}', '/abs', 'a//b', '']) {
      expect(isSafeRefName(bad), bad).toBe(false);
      const plan = workspacePlan('t', { kind: 'fix_ci', repo: 'acme/web', number: 7, checkout: { remote: '/srv/git/acme/web.git', branch: bad, sha: bad, base: bad } });
      expect(plan).toEqual({ repo: 'acme/web', remote: '/srv/git/acme/web.git', pull: 7, pushes: false });
      expect(workspacePlan('t', { kind: 'custom', repo: 'acme/web', number: 0, checkout: { remote: '/srv/x.git', ref: bad } })).toBeUndefined();
    }
    for (const bad of ['ext::sh -c touch% /tmp/pwned', '-oProxyCommand=x', 'https://h/a b', 'file://-x', 'fd::17', 'relative/path', '']) expect(isSafeRemote(bad), bad).toBe(false);
    for (const good of ['https://forgejo.example.com/acme/web.git', 'ssh://git@forgejo:2222/acme/web.git', 'git@forgejo.example.com:acme/web.git', '/srv/git/acme/web.git', 'file:///srv/git/w.git']) {
      expect(isSafeRemote(good), good).toBe(true);
    }
    expect(remoteUrl('https://forgejo.example.com/{repo}.git', 'acme/web')).toBe('https://forgejo.example.com/acme/web.git');
    expect(remoteUrl('git@forgejo:{owner}/{name}.git', 'acme/web')).toBe('git@forgejo:acme/web.git');
    expect(remoteUrl('https://f/{repo}.git', '../etc')).toBeUndefined();
  });

  it('reports a claimed branch or rev the remote lacks, and fails a run whose push was refused', () => {
    const plan: WorkspacePlan = { repo: 'a/b', remote: '/r.git', branch: 'drover/implement-1', pushes: true };
    const tip = 'a'.repeat(40);
    expect(verifiedResult({ ...success(), rev: 'b'.repeat(40) }, plan, { push: 'pushed', remoteRev: tip, claimedRevOnRemote: false, kept: false })).toMatchObject({
      outcome: 'success', branch: 'drover/implement-1', rev: tip, details: { workspace: { unverified: [`rev ${'b'.repeat(40)} is not on the remote's drover/implement-1`] } },
    });
    const refused = verifiedResult(success('work'), plan, { push: 'rejected', pushError: 'non-fast-forward', remoteRev: tip, kept: true });
    expect(refused.outcome).toBe('fail');
    expect(refused.summary).toContain('could not push drover/implement-1: non-fast-forward');
    expect(verifiedResult({ ...success(), branch: 'elsewhere' }, plan, { push: 'nothing', remoteRev: '', claimedRemoteRev: '', kept: false })).toMatchObject({
      details: { workspace: { unverified: ['branch elsewhere is not on the remote'] } },
    });
  });
});

describe('workspaces on real git', () => {
  it('implement: a task branch from the default branch, the agent’s commit pushed, the result verified, the worktree removed', async () => {
    const base = remotes.create('acme/one');
    const ws = workspaces();
    const task = input('implement', 'acme/one', 42);
    const plan = workspacePlan('implement:acme:one:42', task)!;
    const prepared = await ws.prepare(plan, 'k1');
    expect(prepared).toMatchObject({ head: base, branch: 'drover/implement-42', base: 'main', remoteBranchExisted: false });
    expect(git(prepared.dir, 'rev-parse', '--abbrev-ref', 'HEAD')).toBe('drover/implement-42');
    expect(ws.environment(plan, prepared)).toMatchObject({ DROVER_WORKSPACE: prepared.dir, DROVER_BRANCH: 'drover/implement-42', DROVER_BASE: 'main', DROVER_HEAD: base, DROVER_PUSH: 'auto' });

    const rev = commitFiles(prepared.dir, { 'feature.txt': 'hello\n' });
    const result = await ws.finish(plan, 'k1', { ...success(), rev });
    expect(result).toMatchObject({ outcome: 'success', branch: 'drover/implement-42', rev, details: { workspace: { push: 'pushed', kept: false } } });
    expect(remotes.tip('acme/one', 'drover/implement-42')).toBe(rev);
    expect(existsSync(prepared.dir)).toBe(false);
    // Finishing again (a retried activity) pushes nothing twice and reports the same.
    expect(await ws.finish(plan, 'k1', { ...success(), rev })).toMatchObject({ branch: 'drover/implement-42', rev });

    // The next attempt of the task continues the pushed branch.
    const again = await ws.prepare(plan, 'k2');
    expect(again).toMatchObject({ head: rev, branch: 'drover/implement-42', remoteBranchExisted: true });
    expect(readFileSync(join(again.dir, 'feature.txt'), 'utf8')).toBe('hello\n');
  });

  it('a pull request kind checks out the head branch at the event’s sha; a review of a fork’s PR is detached at refs/pull/<n>/head', async () => {
    remotes.create('acme/two');
    const work = remotes.clone('acme/two');
    const first = remotes.push(work, { 'a.txt': '1\n' }, 'feature/x');
    const second = remotes.push(work, { 'a.txt': '2\n' }, 'feature/x');
    const ws = workspaces();
    const fix = workspacePlan('fix_ci:acme:two:5', input('fix_ci', 'acme/two', 5, { branch: 'feature/x', sha: first, base: 'main' }))!;
    const prepared = await ws.prepare(fix, 'fix');
    expect(prepared).toMatchObject({ head: first, branch: 'feature/x' });
    // Pushing from the event's sha when the branch has moved on is refused: the result says so.
    commitFiles(prepared.dir, { 'b.txt': 'fix\n' });
    const refused = await ws.finish(fix, 'fix', success());
    expect(refused.outcome).toBe('fail');
    expect(refused).toMatchObject({ branch: 'feature/x', rev: second, details: { workspace: { push: 'rejected', kept: true } } });
    expect(existsSync(prepared.dir)).toBe(true);

    // A fork's head exists only as refs/pull/9/head on the base repository.
    git(work, 'checkout', '-q', '-b', 'fork-work', 'origin/main');
    const forkRev = commitFiles(work, { 'fork.txt': 'from a fork\n' });
    git(work, 'push', '-q', 'origin', 'HEAD:refs/pull/9/head');
    const review = workspacePlan('review:acme:two:9', input('review', 'acme/two', 9, { branch: 'fork-work' }))!;
    const reviewed = await ws.prepare(review, 'review');
    expect(reviewed).toMatchObject({ head: forkRev });
    expect(reviewed.branch).toBeUndefined();
    expect(readFileSync(join(reviewed.dir, 'fork.txt'), 'utf8')).toBe('from a fork\n');
    expect(await ws.finish(review, 'review', success('looks good'))).toMatchObject({ outcome: 'success', details: { workspace: { push: 'off' } } });
  });

  it('two attempts of one repository at once share one mirror and do not interfere', async () => {
    remotes.create('acme/three');
    const ws = workspaces();
    const plans = [1, 2].map((n) => workspacePlan(`implement:acme:three:${n}`, input('implement', 'acme/three', n))!);
    const prepared = await Promise.all(plans.map((plan, i) => ws.prepare(plan, `c${i}`)));
    expect(prepared[0]!.dir).not.toBe(prepared[1]!.dir);
    const revs = prepared.map((p, i) => commitFiles(p.dir, { [`f${i}.txt`]: `${i}\n` }));
    const results = await Promise.all(plans.map((plan, i) => ws.finish(plan, `c${i}`, success())));
    expect(results.map((r) => [r.branch, r.rev])).toEqual([
      ['drover/implement-1', revs[0]],
      ['drover/implement-2', revs[1]],
    ]);
    expect(readdirSync(join(ws.settings.workdir, '.drover', 'mirrors', 'acme'))).toEqual(expect.arrayContaining(['three.git']));
    expect(readdirSync(join(ws.settings.workdir, '.drover', 'mirrors', 'acme')).filter((n) => n.endsWith('.git'))).toHaveLength(1);
  });

  it('a failed attempt’s worktree is kept, detached, then swept once older than keepFailed; the branch is free for the next attempt', async () => {
    remotes.create('acme/four');
    const ws = workspaces({ keepFailedMs: 60_000 });
    const plan = workspacePlan('implement:acme:four:1', input('implement', 'acme/four', 1))!;
    const failed = await ws.prepare(plan, 'f1');
    commitFiles(failed.dir, { 'half.txt': 'half\n' });
    const result = await ws.finish(plan, 'f1', { outcome: 'fail', summary: 'broke' });
    // The commit is pushed all the same: the next attempt continues the work.
    expect(result).toMatchObject({ outcome: 'fail', details: { workspace: { push: 'pushed', kept: true } } });
    expect(existsSync(join(failed.dir, 'half.txt'))).toBe(true);
    const next = await ws.prepare(plan, 'f2');
    expect(next.branch).toBe('drover/implement-1');
    expect(existsSync(failed.dir)).toBe(true);
    // Older than keepFailed: the next prepare sweeps it.
    const old = new Date(Date.now() - 10 * 60_000);
    utimesSync(`${failed.dir}.kept`, old, old);
    await ws.finish(plan, 'f2', success());
    await ws.prepare(plan, 'f3');
    expect(existsSync(failed.dir)).toBe(false);
  });

  it('a claimed rev the remote lacks is reported, not passed on; push: agent leaves pushing to the agent', async () => {
    const base = remotes.create('acme/five');
    const ws = workspaces({ push: 'agent' });
    const plan = workspacePlan('implement:acme:five:3', input('implement', 'acme/five', 3))!;
    const prepared = await ws.prepare(plan, 'a1');
    const local = commitFiles(prepared.dir, { 'x.txt': 'x\n' });
    const result = await ws.finish(plan, 'a1', { ...success(), branch: 'drover/implement-3', rev: local });
    expect(result.rev).toBeUndefined();
    expect(result.branch).toBeUndefined();
    expect(result.details).toMatchObject({ workspace: { push: 'off', unverified: ['branch drover/implement-3 is not on the remote'], claimedRev: local } });
    expect(remotes.tip('acme/five', 'main')).toBe(base);
  });

  it('a ref or remote that does not exist is a clear error; an unreachable remote is transient', async () => {
    remotes.create('acme/six');
    const ws = workspaces();
    const missing = workspacePlan('custom:1', input('custom', 'acme/six', 0, { ref: 'no-such-tag' }))!;
    await expect(ws.prepare(missing, 'm1')).rejects.toMatchObject({ message: expect.stringContaining('ref no-such-tag is not in the repository'), transient: false });
    const gone = workspacePlan('implement:acme:nowhere:1', { ...input('implement', 'acme/nowhere', 1) })!;
    const error = await ws.prepare(gone, 'm2').catch((e: unknown) => e);
    expect(error).toBeInstanceOf(WorkspaceError);
    expect(error).toMatchObject({ transient: true, message: expect.stringContaining('fetching') });
  });
});

describe('workspace messages', () => {
  it('never carry a URL’s userinfo', async () => {
    const { redactUrls } = await import('../src/workspace/workspace');
    expect(redactUrls("fetching https://drover:s3cret-token@forgejo.example.com/acme/web.git failed: fatal: repository 'https://x:y@h/r' not found")).toBe(
      "fetching https://***@forgejo.example.com/acme/web.git failed: fatal: repository 'https://***@h/r' not found",
    );
    expect(redactUrls('git@forgejo.example.com:acme/web.git')).toBe('git@forgejo.example.com:acme/web.git');
  });
});
