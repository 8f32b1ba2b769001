// An attempt's workspace, wherever the agent runs: the SSH runner and `drover agent` both make it
// with ./scripts.ts through a ScriptExec (an SSH channel, a local shell), before the agent
// starts, and finish it after: push, check against the remote, remove or keep.
import type { TaskInput, TaskResult } from '../model';
import { clip } from '../providers/result-line';
import { workspacePlan, type PushMode, type WorkspacePlan } from './plan';
import { buildFinishScript, buildPrepareScript, parseKeyValues, type GitCredentials } from './scripts';

/** Runs a script under /bin/sh with `stdin`, to its end. */
export type ScriptExec = (script: string, stdin: Buffer, timeoutMs: number) => Promise<{ code: number | null; stdout: string; stderr: string }>;

export interface WorkspaceSettings {
  /** The machine's working directory: workspaces live under its `.drover`. */
  workdir: string;
  push: PushMode;
  /** How long a failed attempt's worktree is kept before it is swept. */
  keepFailedMs: number;
  credentials?: GitCredentials;
  /** Give the agent Drover's git credentials too (GIT_ASKPASS, GIT_SSH in its environment). */
  agentCredentials?: boolean;
  /** Longest a prepare (a first clone of a large repository included) may take. */
  prepareTimeoutMs?: number;
}

export interface PreparedWorkspace {
  /** The worktree, absolute: the agent's working directory. */
  dir: string;
  /** The commit it started at. */
  head: string;
  /** The local branch checked out; none when detached. */
  branch?: string;
  base?: string;
  /** The task branch was on the remote already (a retry or a resumed session continues it). */
  remoteBranchExisted: boolean;
  credentialsDir?: string;
}

/** Userinfo in a URL (`https://user:token@host/…`) never reaches a log or a result. */
export function redactUrls(text: string): string {
  return text.replace(/([a-z][a-z0-9+.-]*:\/\/)[^/@\s]+@/gi, '$1***@');
}

/** A workspace that could not be made. `transient`: trying again may work (a fetch failed). */
export class WorkspaceError extends Error {
  override readonly name = 'WorkspaceError';
  constructor(
    message: string,
    readonly transient: boolean,
  ) {
    super(message);
  }
}

/** What the finish script found. */
export interface FinishOutcome {
  push?: 'pushed' | 'rejected' | 'nothing' | 'off';
  pushError?: string;
  dirtyFiles?: number;
  headAfter?: string;
  /** The branch's tip on the remote; empty when the remote has no such branch. */
  remoteRev?: string;
  claimedRemoteRev?: string;
  claimedRevOnRemote?: boolean;
  kept: boolean;
}

export class Workspaces {
  constructor(
    private readonly exec: ScriptExec,
    readonly settings: WorkspaceSettings,
  ) {}

  async prepare(plan: WorkspacePlan, runKey: string): Promise<PreparedWorkspace> {
    const { script, stdin } = buildPrepareScript({
      workdir: this.settings.workdir,
      plan,
      runKey,
      credentials: this.settings.credentials,
      keepFailedMinutes: this.settings.keepFailedMs / 60_000,
    });
    const answer = await this.exec(script, stdin, this.settings.prepareTimeoutMs ?? 15 * 60_000);
    const values = parseKeyValues(answer.stdout);
    if (answer.code !== 0 || !values.workspace || !values.head) {
      const why = redactUrls(values.error ?? (answer.stderr.trim() || `exit code ${answer.code}`));
      throw new WorkspaceError(clip(why, 1_000), /^(fetching|the mirror stayed locked)/.test(why));
    }
    return {
      dir: values.workspace,
      head: values.head,
      ...(values.branch && values.detached === '0' ? { branch: values.branch } : {}),
      ...(values.base ? { base: values.base } : {}),
      remoteBranchExisted: values.remote_branch === '1',
      ...(values.credentials ? { credentialsDir: values.credentials } : {}),
    };
  }

  /** What the agent learns of its workspace, in its environment. */
  environment(plan: WorkspacePlan, prepared: PreparedWorkspace): Record<string, string> {
    const env: Record<string, string> = {
      DROVER_WORKSPACE: prepared.dir,
      DROVER_BRANCH: plan.branch ?? '',
      DROVER_BASE: prepared.base ?? '',
      DROVER_HEAD: prepared.head,
      DROVER_PUSH: plan.pushes ? this.settings.push : 'never',
    };
    if (this.settings.agentCredentials && prepared.credentialsDir) {
      if (this.settings.credentials?.token) env.GIT_ASKPASS = `${prepared.credentialsDir}/askpass`;
      if (this.settings.credentials?.sshKey) env.GIT_SSH = `${prepared.credentialsDir}/ssh`;
      env.GIT_TERMINAL_PROMPT = '0';
      // Nor may the agent's own git hand the token to the machine's credential helper, which
      // would keep it (~/.git-credentials in clear) for any later process. (An agent environment
      // of its own GIT_CONFIG_COUNT is replaced by this one.)
      if (this.settings.credentials?.token) Object.assign(env, { GIT_CONFIG_COUNT: '1', GIT_CONFIG_KEY_0: 'credential.helper', GIT_CONFIG_VALUE_0: '' });
    }
    return env;
  }

  /** An attempt that ended without a result (cancelled, lost): its worktree is kept a while, nothing pushed. */
  async abandon(plan: WorkspacePlan, runKey: string): Promise<void> {
    const { script, stdin } = buildFinishScript({ workdir: this.settings.workdir, plan, runKey, credentials: this.settings.credentials, push: 'never', keep: true });
    await this.exec(script, stdin, 60_000);
  }

  /** Pushes, checks the result against the remote, and removes the worktree (or keeps a failed one). */
  async finish(plan: WorkspacePlan, runKey: string, result: TaskResult): Promise<TaskResult> {
    const claimedBranch = result.branch ?? (result.rev ? plan.branch : undefined);
    const { script, stdin } = buildFinishScript({
      workdir: this.settings.workdir,
      plan,
      runKey,
      credentials: this.settings.credentials,
      push: plan.pushes ? this.settings.push : 'never',
      keep: result.outcome === 'fail',
      ...(claimedBranch ? { claimedBranch } : {}),
      ...(result.rev ? { claimedRev: result.rev } : {}),
    });
    const answer = await this.exec(script, stdin, 5 * 60_000);
    const values = parseKeyValues(answer.stdout);
    if (answer.code !== 0) {
      const why = redactUrls(values.error ?? (answer.stderr.trim() || `exit code ${answer.code}`));
      return { ...result, details: { ...result.details, workspace: { error: clip(why, 1_000) } } };
    }
    return verifiedResult(result, plan, {
      ...(values.push ? { push: values.push as FinishOutcome['push'] } : {}),
      ...(values.push_error ? { pushError: redactUrls(values.push_error.trim()) } : {}),
      ...(values.dirty !== undefined ? { dirtyFiles: Number(values.dirty) || 0 } : {}),
      ...(values.head_after ? { headAfter: values.head_after } : {}),
      ...(values.remote_rev !== undefined ? { remoteRev: values.remote_rev } : {}),
      ...(values.claimed_remote_rev !== undefined ? { claimedRemoteRev: values.claimed_remote_rev } : {}),
      ...(values.claimed_rev_on_remote !== undefined ? { claimedRevOnRemote: values.claimed_rev_on_remote === '1' } : {}),
      kept: values.kept === '1',
    });
  }
}

/**
 * One attempt's workspace, for the runner that drives the attempt (the SSH runner, `drover agent`):
 * the task's plan bound to the attempt's run key, made before the agent and finished after it.
 */
export class AttemptWorkspace {
  private prepared: PreparedWorkspace | undefined;

  private constructor(
    private readonly workspaces: Workspaces,
    readonly plan: WorkspacePlan,
    private readonly runKey: string,
  ) {}

  /** The attempt's workspace, or none when the task checks nothing out (see workspacePlan). */
  static of(exec: ScriptExec, settings: WorkspaceSettings, taskId: string, input: Pick<TaskInput, 'kind' | 'repo' | 'number' | 'checkout'>, runKey: string): AttemptWorkspace | undefined {
    const plan = workspacePlan(taskId, input);
    return plan ? new AttemptWorkspace(new Workspaces(exec, settings), plan, runKey) : undefined;
  }

  /** Makes the worktree (or finds it made); returns the log line that says where the agent works. */
  async prepare(): Promise<string> {
    const prepared = await this.workspaces.prepare(this.plan, this.runKey);
    this.prepared = prepared;
    return `[drover] workspace ${prepared.dir}: ${prepared.branch ? `branch ${prepared.branch}` : 'detached'} at ${prepared.head}\n`;
  }

  /** The agent's working directory, once prepared. */
  get dir(): string | undefined {
    return this.prepared?.dir;
  }

  /** What the agent learns of its workspace (nothing before it is prepared). */
  environment(): Record<string, string> {
    return this.prepared ? this.workspaces.environment(this.plan, this.prepared) : {};
  }

  finish(result: TaskResult): Promise<TaskResult> {
    return this.workspaces.finish(this.plan, this.runKey, result);
  }

  /** The attempt ended without a result: the worktree is kept a while, nothing pushed (best effort). */
  abandon(): Promise<void> {
    return this.workspaces.abandon(this.plan, this.runKey).catch(() => undefined);
  }
}

/** The result of an attempt whose workspace could not be made: the agent never ran. */
export function workspaceFailure(provider: string, error: Error): TaskResult {
  return { outcome: 'fail', summary: `the workspace could not be prepared: ${error.message}`, details: { provider, workspace: { error: error.message } } };
}

/**
 * The result as the remote has it: `branch` and `rev` are what the remote holds, never only what
 * the agent said. A claimed branch or rev the remote lacks is reported in `details.workspace`; a
 * push that was refused fails a run that would otherwise succeed (its work is not delivered).
 */
export function verifiedResult(result: TaskResult, plan: WorkspacePlan, found: FinishOutcome): TaskResult {
  const workspace: Record<string, unknown> = { push: found.push ?? 'off', kept: found.kept };
  if (plan.branch) workspace.branch = plan.branch;
  if (found.pushError) workspace.pushError = found.pushError;
  if (found.dirtyFiles) workspace.uncommittedFiles = found.dirtyFiles;
  const { branch: claimedBranch, rev: claimedRev, ...rest } = result;
  const verified: TaskResult = { ...rest, details: { ...result.details, workspace } };
  const unverified: string[] = [];
  if (claimedBranch && claimedBranch !== plan.branch) {
    if (found.claimedRemoteRev) {
      verified.branch = claimedBranch;
      verified.rev = claimedRev && found.claimedRevOnRemote ? claimedRev : found.claimedRemoteRev;
      if (claimedRev && !found.claimedRevOnRemote) unverified.push(`rev ${claimedRev} is not on the remote's ${claimedBranch}`);
    } else {
      unverified.push(`branch ${claimedBranch} is not on the remote`);
    }
  } else if (plan.branch && found.remoteRev) {
    verified.branch = plan.branch;
    verified.rev = found.remoteRev;
    if (claimedRev && !found.remoteRev.startsWith(claimedRev.toLowerCase()) && found.claimedRevOnRemote !== true) {
      unverified.push(`rev ${claimedRev} is not on the remote's ${plan.branch}`);
    }
  } else if (claimedBranch || claimedRev) {
    unverified.push(`${claimedBranch ? `branch ${claimedBranch}` : `rev ${claimedRev}`} is not on the remote`);
  }
  if (unverified.length > 0) {
    workspace.unverified = unverified;
    if (claimedBranch) workspace.claimedBranch = claimedBranch;
    if (claimedRev) workspace.claimedRev = claimedRev;
  }
  if (found.push === 'rejected' && result.outcome !== 'fail') {
    verified.outcome = 'fail';
    verified.summary = clip(`Drover could not push ${plan.branch ?? 'the work'}: ${found.pushError || 'the remote refused it'}. The worktree is kept.\n\n${result.summary}`);
  }
  return verified;
}
