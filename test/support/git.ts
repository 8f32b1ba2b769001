// Real git repositories for tests: a bare "remote" as Forgejo would hold it (with the
// refs/pull/<n>/head refs Forgejo keeps for pull requests), and helpers to commit in a worktree.
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

const IDENTITY = { GIT_AUTHOR_NAME: 'Test', GIT_AUTHOR_EMAIL: 'test@example.com', GIT_COMMITTER_NAME: 'Test', GIT_COMMITTER_EMAIL: 'test@example.com' };

export function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8', env: { ...process.env, ...IDENTITY }, stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

/** Commits `files` (path → content) on the current branch of the checkout `cwd`; returns the commit. */
export function commitFiles(cwd: string, files: Record<string, string>, message = 'change'): string {
  for (const [path, content] of Object.entries(files)) {
    mkdirSync(dirname(join(cwd, path)), { recursive: true });
    writeFileSync(join(cwd, path), content);
  }
  git(cwd, 'add', '-A');
  git(cwd, 'commit', '-q', '-m', message);
  return git(cwd, 'rev-parse', 'HEAD');
}

export class GitRemotes {
  readonly root = mkdtempSync(join(tmpdir(), 'drover-remotes-'));

  /** The remote's path for `owner/name` (a bare repository once `create` made it). */
  path(repo: string): string {
    return join(this.root, `${repo}.git`);
  }

  /** A bare repository with one commit on `main` (and `files` in it); returns the commit. */
  create(repo: string, files: Record<string, string> = { 'README.md': `# ${repo}\n` }): string {
    const bare = this.path(repo);
    mkdirSync(bare, { recursive: true });
    git(bare, 'init', '-q', '--bare', '--initial-branch=main');
    const work = this.clone(repo);
    return this.push(work, files, 'main', 'initial commit');
  }

  /** A fresh clone of the remote. */
  clone(repo: string): string {
    const work = mkdtempSync(join(tmpdir(), 'drover-clone-'));
    git(work, 'clone', '-q', this.path(repo), '.');
    return work;
  }

  /** Commits `files` on `branch` (made from the clone's HEAD if new) and pushes it; returns the commit. */
  push(work: string, files: Record<string, string>, branch: string, message = 'change'): string {
    git(work, 'checkout', '-q', '-B', branch);
    const rev = commitFiles(work, files, message);
    git(work, 'push', '-q', 'origin', `HEAD:refs/heads/${branch}`);
    return rev;
  }

  /** What the remote's branch points at; '' when it has none. */
  tip(repo: string, branch: string): string {
    return git(this.path(repo), 'for-each-ref', '--format=%(objectname)', `refs/heads/${branch}`);
  }

  /** Points refs/pull/<n>/head at `rev`, as Forgejo does for a pull request. */
  setPullHead(repo: string, number: number, rev: string): void {
    git(this.path(repo), 'update-ref', `refs/pull/${number}/head`, rev);
  }
}

export { IDENTITY as GIT_IDENTITY };
