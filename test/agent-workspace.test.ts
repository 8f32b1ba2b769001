// `drover agent` end to end with a workspace: the real CLI process against the real API app and
// task workflow, a task enqueued over HTTP for a repository whose clone URL comes from the
// config's workspaces.remoteUrl (a bare repository on disk), the command run in a worktree of
// its own, its commit pushed to the task branch and the result checked against the remote.
import { spawnDroverAgent, type AgentProcess } from './support/drover-agent';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { remoteUrl } from '../src/workspace/plan';
import { git, GIT_IDENTITY, GitRemotes } from './support/git';
import { adminAuth, agent, startHarness, type Harness } from './support/http';
import { uniqueRepo, uniqueType } from './support/temporal';

const TYPE = uniqueType('pullws');
const PLAIN_TYPE = uniqueType('pullplain');
const WS_AGENT = agent('pw-1', [TYPE]);
const PLAIN_AGENT = agent('pw-2', [PLAIN_TYPE]);

const remotes = new GitRemotes();
const TEMPLATE = `${remotes.root}/{repo}.git`;
const scratch = mkdtempSync(join(tmpdir(), 'drover-agent-ws-'));
/** Where the commands record what they saw (their working directory, their environment). */
const records = join(scratch, 'records');
mkdirSync(records);

let h: Harness;
let app: FastifyInstance;
let base: string;
const children: AgentProcess[] = [];

beforeAll(async () => {
  // The template is an absolute path: remoteUrl() must take it (the config check relies on it).
  expect(remoteUrl(TEMPLATE, 'acme/web')).toBe(join(remotes.root, 'acme/web.git'));
  h = await startHarness({ types: ['dev', 'reviewer', 'boss', TYPE, PLAIN_TYPE], agents: [WS_AGENT.config, PLAIN_AGENT.config], workspaces: { remoteUrl: TEMPLATE } });
  await h.startWorker([]);
  app = await h.app();
  base = await app.listen({ host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  for (const child of children) if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL');
  await h?.close();
  rmSync(scratch, { recursive: true, force: true });
  rmSync(remotes.root, { recursive: true, force: true });
});

/** `drover agent` for one task, running `/bin/sh -c <script> <records>` as its command. */
function startAgent(who: ReturnType<typeof agent>, workdir: string, script: string, agentArgs: string[] = []): AgentProcess {
  const handle = spawnDroverAgent(
    ['--server', base, '--agent-id', who.id, '--wait', '2', '--kill-grace', '1s', '--workdir', workdir, '--provider', 'command', '--max-tasks', '1', ...agentArgs, '--', '/bin/sh', '-c', script, records],
    // The command commits: git takes its identity from the environment it inherits.
    { ...GIT_IDENTITY, DROVER_AGENT_TOKEN: who.token },
  );
  children.push(handle);
  return handle;
}

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { ...adminAuth, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** POST /api/v1/tasks: an implement task for `repo` #`number`. */
async function enqueue(type: string, repo: string, number: number): Promise<string> {
  const { status, json } = await api('POST', '/api/v1/tasks', { agent_type: type, kind: 'implement', title: `task ${number}`, prompt: `implement ${number}`, repo, number, options: { match_window_ms: 60_000, lease_ms: 20_000 } });
  expect(status, JSON.stringify(json)).toBe(201);
  return json.task_id as string;
}

/** The recorded environment of a command (`env` output) as a map. */
function recordedEnv(name: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of readFileSync(join(records, name), 'utf8').split('\n')) {
    const at = line.indexOf('=');
    if (at > 0) env[line.slice(0, at)] = line.slice(at + 1);
  }
  return env;
}

describe('drover agent with workspaces', () => {
  it('runs the command in a worktree of the task’s repository, pushes its commit to the task branch, verifies it, and removes the worktree', async () => {
    const repo = uniqueRepo();
    const initial = remotes.create(repo);
    const number = 41;
    const workdir = mkdtempSync(join(scratch, 'workdir-'));
    // The agent: records where it runs and what it was told, writes a file, commits it, exits 0.
    const script = [
      'set -e',
      'pwd -P > "$0/pwd-$DROVER_NUMBER"',
      'env > "$0/env-$DROVER_NUMBER"',
      'printf "made by the agent\\n" > feature.txt',
      'git add feature.txt',
      'git commit -q -m "agent work"',
      'echo "committed $(git rev-parse HEAD)"',
    ].join('\n');
    const child = startAgent(WS_AGENT, workdir, script);
    const taskId = await enqueue(TYPE, repo, number);
    const status = await h.tasks.result(taskId);
    const output = () => child.output.join('');
    expect(status.state, output()).toBe('completed');
    expect(await child.exited, output()).toBe(0);

    const branch = `drover/implement-${number}`;
    const tip = remotes.tip(repo, branch);
    expect(tip).toMatch(/^[0-9a-f]{40}$/);
    expect(tip).not.toBe(initial);
    expect(status.result).toMatchObject({ outcome: 'success', branch, rev: tip, details: { provider: 'command', exitCode: 0, workspace: { push: 'pushed', kept: false, branch } } });
    // The remote holds the agent's commit, on top of the default branch.
    const bare = remotes.path(repo);
    expect(git(bare, 'show', `${tip}:feature.txt`)).toBe('made by the agent');
    expect(git(bare, 'rev-parse', `${tip}^`)).toBe(initial);
    expect(git(bare, 'log', '-1', '--format=%s', tip)).toBe('agent work');

    // It ran in <workdir>/.drover/worktrees/<run key>, told so in its environment.
    const ran = readFileSync(join(records, `pwd-${number}`), 'utf8').trim();
    const worktrees = join(realpathSync(workdir), '.drover', 'worktrees');
    expect(ran.startsWith(`${worktrees}/`), ran).toBe(true);
    expect(ran.slice(worktrees.length + 1)).toMatch(/^[A-Za-z0-9_.-]+$/);
    const env = recordedEnv(`env-${number}`);
    expect(env).toMatchObject({ DROVER_WORKSPACE: ran, DROVER_BRANCH: branch, DROVER_BASE: 'main', DROVER_HEAD: initial, DROVER_PUSH: 'auto', DROVER_TASK_ID: taskId });
    expect(env.DROVER_AGENT_TOKEN).toBeUndefined();
    // No credentials were configured, so none were given to the command.
    expect(env.GIT_ASKPASS).toBeUndefined();
    expect(output()).toContain('"msg":"workspace ready"');
    // The task's log (the command's output the agent uploaded) says where it ran.
    const logs = await api('GET', `/api/v1/tasks/${encodeURIComponent(taskId)}/logs`);
    expect(logs.status).toBe(200);
    expect(logs.json.log).toContain(`[drover] workspace ${ran}: branch ${branch} at ${initial}`);

    // The worktree is gone once the task finished; the mirror stays for the next task.
    expect(existsSync(ran)).toBe(false);
    expect(readdirSync(worktrees)).toEqual([]);
    const mirror = join(realpathSync(workdir), '.drover', 'mirrors', `${repo}.git`);
    expect(git(mirror, 'config', 'remote.origin.url')).toBe(bare);
    expect(git(mirror, 'worktree', 'list', '--porcelain')).not.toContain('worktrees/');
    // …and its local task branch was let go (the next attempt starts from the remote's).
    expect(git(mirror, 'branch', '--list', branch)).toBe('');

    // The task view names the checkout the workspace was made from.
    const view = await api('GET', `/api/v1/tasks/${encodeURIComponent(taskId)}`);
    expect(view.status).toBe(200);
    expect(view.json).toMatchObject({ task_id: taskId, state: 'completed', repo, number, checkout: { remote: bare }, result: { branch, rev: tip } });
  }, 180_000);

  it('--no-workspaces: the command runs in --workdir; nothing is checked out or pushed', async () => {
    const repo = uniqueRepo();
    const initial = remotes.create(repo);
    const number = 42;
    const workdir = mkdtempSync(join(scratch, 'plain-'));
    const script = ['set -e', 'pwd -P > "$0/pwd-$DROVER_NUMBER"', 'env > "$0/env-$DROVER_NUMBER"', 'echo "nothing to commit here"'].join('\n');
    const child = startAgent(PLAIN_AGENT, workdir, script, ['--no-workspaces']);
    const taskId = await enqueue(PLAIN_TYPE, repo, number);
    const status = await h.tasks.result(taskId);
    const output = () => child.output.join('');
    expect(status.state, output()).toBe('completed');
    expect(await child.exited, output()).toBe(0);
    expect(status.result).toMatchObject({ outcome: 'success', summary: 'nothing to commit here' });
    expect(status.result!.branch).toBeUndefined();
    expect(status.result!.rev).toBeUndefined();
    expect(status.result!.details?.workspace).toBeUndefined();

    expect(readFileSync(join(records, `pwd-${number}`), 'utf8').trim()).toBe(realpathSync(workdir));
    const env = recordedEnv(`env-${number}`);
    expect(env.DROVER_WORKSPACE).toBeUndefined();
    expect(env.DROVER_HEAD).toBeUndefined();
    expect(existsSync(join(workdir, '.drover'))).toBe(false);
    // The task still carries its checkout (another agent could make the workspace); this one did not.
    expect((await api('GET', `/api/v1/tasks/${encodeURIComponent(taskId)}`)).json).toMatchObject({ checkout: { remote: remotes.path(repo) } });
    expect(remotes.tip(repo, `drover/implement-${number}`)).toBe('');
    expect(remotes.tip(repo, 'main')).toBe(initial);
  }, 180_000);
});
