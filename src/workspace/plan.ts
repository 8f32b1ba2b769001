// What a task's workspace checks out, decided from the task alone (pure: unit tests drive it).
// Every attempt works in a git worktree of its own, made from a mirror of the repository that
// every slot and agent type on the machine shares (see ./scripts.ts).
import type { TaskCheckout, TaskInput, TaskKind } from '../model';
import { suggestedBranch } from '../run/env';

/** What happens to the agent's commits once it ends. */
export type PushMode = 'auto' | 'agent' | 'never';
export const PUSH_MODES: readonly PushMode[] = ['auto', 'agent', 'never'];

export interface WorkspacePlan {
  /** `owner/name`: names the mirror. */
  repo: string;
  remote: string;
  /**
   * The branch the agent works on, checked out as a local branch of that name: implement's task
   * branch, a pull request's head branch. None: a detached checkout (reviews, merges, custom refs).
   */
  branch?: string;
  /** The task branch starts here when the remote does not have it yet; default: the remote's HEAD. */
  base?: string;
  /** Check out exactly this commit (a pull request's head when the event was sent). */
  sha?: string;
  /** A pull request whose `refs/pull/<n>/head` is fetched too (its head may live in a fork). */
  pull?: number;
  /** `custom`: a branch, tag or commit, checked out detached. */
  ref?: string;
  /** Whether the kind's work is pushed to `branch` (auto push mode). */
  pushes: boolean;
}

/** Kinds whose agent works on a pull request's head branch, and pushes to it. */
const PULL_HEAD_KINDS: ReadonlySet<TaskKind> = new Set(['address_review', 'fix_ci']);
/** Kinds whose agent reads a pull request's head, detached: nothing of theirs is pushed. */
const PULL_READ_KINDS: ReadonlySet<TaskKind> = new Set(['review', 'merge']);

const REPO_PART = /^(?!\.\.?$)[A-Za-z0-9_.-]{1,100}$/;
const SHA = /^[0-9a-f]{7,64}$/i;

/**
 * A branch or tag name safe to give git and a shell: git's own rules (no `..`, `@{`, `//`, no
 * leading `-` or `/`, no `.lock` ending) on a conservative character set.
 */
export function isSafeRefName(name: unknown): name is string {
  return (
    typeof name === 'string' &&
    /^[A-Za-z0-9._/+-]{1,200}$/.test(name) &&
    !/^[-/.]|\/$|\.\.|\/\/|@\{|\.lock$|\/\.|\.$/.test(name)
  );
}

/**
 * A clone URL Drover may hand to git: http(s), ssh or git URLs, scp-like `user@host:path`, file
 * URLs and absolute paths. Never a transport helper (`ext::…`), an option (`-…`), whitespace or
 * control characters.
 */
export function isSafeRemote(url: unknown): url is string {
  if (typeof url !== 'string' || url.length > 2_000 || /\s/.test(url) || [...url].some((c) => c < ' ' || c === '\x7f') || url.includes('::')) return false;
  return /^(https?|ssh|git|file):\/\/[^-]/.test(url) || /^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[A-Za-z0-9._~/-]+$/.test(url) || /^\/[^-]/.test(url);
}

/** The clone URL of `repo` from a template such as `https://forgejo.example.com/{repo}.git`. */
export function remoteUrl(template: string, repo: string): string | undefined {
  const [owner, name] = repo.split('/');
  if (!owner || !name || !REPO_PART.test(owner) || !REPO_PART.test(name)) return undefined;
  const url = template.replaceAll('{repo}', repo).replaceAll('{owner}', owner).replaceAll('{name}', name);
  return isSafeRemote(url) ? url : undefined;
}

/** Refs an event or an enqueue request names; unsafe ones are dropped. */
export type CheckoutRefs = Omit<TaskCheckout, 'remote'>;

/** A task's checkout: the repository's clone URL from the config's template, and the safe refs. */
export function taskCheckout(template: string | undefined, repo: string, refs: CheckoutRefs = {}): TaskCheckout | undefined {
  const remote = template && repo ? remoteUrl(template, repo) : undefined;
  if (!remote) return undefined;
  const checkout: TaskCheckout = { remote };
  if (isSafeRefName(refs.base)) checkout.base = refs.base;
  if (isSafeRefName(refs.branch)) checkout.branch = refs.branch;
  if (typeof refs.sha === 'string' && SHA.test(refs.sha)) checkout.sha = refs.sha.toLowerCase();
  if (isSafeRefName(refs.ref) || (typeof refs.ref === 'string' && SHA.test(refs.ref))) checkout.ref = refs.ref;
  return checkout;
}

/** The workspace a task's attempts get, or none (no repository, no remote, a custom task with no ref). */
export function workspacePlan(taskId: string, input: Pick<TaskInput, 'kind' | 'repo' | 'number' | 'checkout'>): WorkspacePlan | undefined {
  const checkout: TaskCheckout | undefined = input.checkout;
  if (!checkout || !isSafeRemote(checkout.remote)) return undefined;
  const [owner, name] = input.repo.split('/');
  if (!owner || !name || !REPO_PART.test(owner) || !REPO_PART.test(name)) return undefined;
  const base = isSafeRefName(checkout.base) ? checkout.base : undefined;
  const sha = typeof checkout.sha === 'string' && SHA.test(checkout.sha) ? checkout.sha.toLowerCase() : undefined;
  const plan = { repo: input.repo, remote: checkout.remote };
  if (input.kind === 'implement') return { ...plan, branch: suggestedBranch(taskId, input), ...(base ? { base } : {}), pushes: true };
  if (PULL_HEAD_KINDS.has(input.kind) || PULL_READ_KINDS.has(input.kind)) {
    const pull = input.number > 0 ? { pull: input.number } : {};
    const branch = PULL_HEAD_KINDS.has(input.kind) && isSafeRefName(checkout.branch) ? checkout.branch : undefined;
    return { ...plan, ...pull, ...(branch ? { branch } : {}), ...(base ? { base } : {}), ...(sha ? { sha } : {}), pushes: branch !== undefined };
  }
  // custom: the ref given with the task, or no workspace at all.
  if (isSafeRefName(checkout.ref) || (typeof checkout.ref === 'string' && SHA.test(checkout.ref))) return { ...plan, ref: checkout.ref, pushes: false };
  return undefined;
}

/** Where a workspace lives on its machine, relative to `<workdir>/.drover`. */
export interface WorkspacePaths {
  /** The repository's mirror, shared by every attempt on the machine. */
  mirror: string;
  /** The attempt's worktree. */
  worktree: string;
}

export function workspacePaths(repo: string, runKey: string): WorkspacePaths {
  if (!/^[A-Za-z0-9_.-]{1,200}$/.test(runKey)) throw new Error(`invalid run key ${JSON.stringify(runKey)}`);
  const [owner, name] = repo.split('/');
  if (!owner || !name || !REPO_PART.test(owner) || !REPO_PART.test(name)) throw new Error(`invalid repository ${JSON.stringify(repo)}`);
  return { mirror: `mirrors/${owner}/${name}.git`, worktree: `worktrees/${runKey}` };
}
