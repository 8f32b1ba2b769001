// The real agent CLIs through Drover, end to end: Claude Code and OpenCode (the pinned native
// binaries) run on a real OpenSSH host through the SshRunner, each in the git worktree Drover
// makes for its task, against local fake model APIs (never a real model). The scripted agents
// really write files and commit them with the CLIs' own tools; Drover pushes the task branch and
// reports what the bare remote holds. sshd runs as the current user on this machine, so the host
// sees the same filesystem: the binaries from node_modules, the remote, the worktrees.
//
// The agent's environment is only sshd's session environment plus Drover's DROVER_* variables,
// so every variable a CLI needs (its HOME, the fake's URL, a git identity) is set by the host's
// agent command itself: `env NAME=value … claude …`.
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import type { RunContext } from '../src/activities/runner';
import type { TaskInput, TaskResult } from '../src/model';
import type { ResultDetails } from '../src/providers';
import { runKey } from '../src/run/detached';
import type { EarlierSession } from '../src/sessions';
import { SshRunner, type SshRunnerHooks } from '../src/ssh/runner';
import { sshTarget } from '../src/workers/ssh-hosts';
import {
  CLAUDE_BINARY,
  claudeOfflineEnv,
  envAssignments,
  OPENCODE_BINARY,
  openCodeConfig,
  openCodeOfflineEnv,
  seedOpenCodeHome,
  writeOpenCodeConfig,
} from './support/agent-cli';
import { startFakeAnthropic, text, toolUse, turn, type FakeAnthropic, type MessagesRequest } from './support/fake-anthropic';
import { startFakeOpenAI, type FakeOpenAI } from './support/fake-openai';
import { commitFiles, GIT_IDENTITY, GitRemotes, git } from './support/git';
import { runContext } from './support/run-context';
import { SshdFleet } from './support/sshd';

const HOST = 'agents-1';
const TIMEOUT = 120_000;

let fleet: SshdFleet;
const remotes = new GitRemotes();
const root = mkdtempSync(join(tmpdir(), 'drover-real-agents-'));

beforeAll(async () => {
  fleet = await SshdFleet.start(1, 'agents');
});
afterAll(async () => {
  await fleet?.stop();
  rmSync(root, { recursive: true, force: true });
  rmSync(remotes.root, { recursive: true, force: true });
});

const identity = envAssignments(GIT_IDENTITY);

/** A fresh HOME for one agent run (the CLIs keep sessions and settings there). */
function freshHome(): string {
  return mkdtempSync(join(root, 'home-'));
}

/** The host's agent command for Claude Code against the fake, in permission mode `mode`. */
function claudeCommand(fake: FakeAnthropic, home: string, mode: 'acceptEdits' | 'default'): string[] {
  return [
    'env',
    ...envAssignments(claudeOfflineEnv(home, fake.url)),
    ...identity,
    CLAUDE_BINARY,
    '-p',
    '--output-format',
    'stream-json',
    '--verbose',
    '--permission-mode',
    mode,
    '--allowedTools',
    'Bash(git *)',
  ];
}

/**
 * The host's agent command for OpenCode against the fake: its config (the fake as the only
 * provider; edits and bash allowed) through OPENCODE_CONFIG, and a seeded config dir so that it
 * does not npm-install its plugin package.
 */
function openCodeCommand(fake: FakeOpenAI, home: string): string[] {
  seedOpenCodeHome(home);
  const configPath = writeOpenCodeConfig(home, openCodeConfig(fake.baseURL, { permission: { edit: 'allow', bash: 'allow' } }));
  return ['env', ...envAssignments(openCodeOfflineEnv(home, configPath, fake.baseURL)), ...identity, OPENCODE_BINARY, 'run', '--format', 'json'];
}

function runner(provider: 'claude-code' | 'opencode', command: string[], options: { sessionResume?: 'always' | 'never'; hooks?: SshRunnerHooks } = {}): SshRunner {
  const config = fleet.hostConfig(HOST, { types: ['dev'], agents: { dev: { provider, command } } });
  return new SshRunner(
    {
      target: sshTarget(config),
      workdir: config.workdir,
      agents: config.agents,
      killGraceMs: 1_000,
      sessionResume: options.sessionResume ?? 'never',
      workspaces: { push: 'auto', keepFailedMs: 3_600_000 },
    },
    options.hooks ?? {},
    { spareConnection: false },
  );
}

interface Attempt {
  ctx: RunContext;
  output: string[];
  /** The worktree Drover makes for this attempt (the agent's working directory). */
  worktree: string;
}

function attempt(kind: TaskInput['kind'], repo: string, number: number, prompt: string, extra: Partial<TaskInput> = {}): Attempt {
  const taskId = `${kind}:${repo.replace('/', ':')}:${number}`;
  const input: TaskInput = { agentType: 'dev', kind, repo, number, title: `task ${number}`, prompt, checkout: { remote: remotes.path(repo) }, ...extra };
  const key = runKey(taskId, randomUUID(), 1);
  return { ...runContext({ taskId, hostId: HOST, input, runKey: key }), worktree: join(fleet.host(HOST).workdir, '.drover', 'worktrees', key) };
}

async function fakeAnthropic(): Promise<FakeAnthropic> {
  const fake = await startFakeAnthropic();
  onTestFinished(() => fake.close());
  return fake;
}

/** The agent's turns (requests that offered the CLI's tools), as the fake received them. */
function turnRequests(fake: FakeAnthropic): MessagesRequest[] {
  return fake.requests.filter((r) => r.kind === 'turn').map((r) => r.body as MessagesRequest);
}

/** The tool_result blocks of a turn request's last (user) message. */
function toolResults(request: MessagesRequest | undefined): Array<{ type: string; tool_use_id?: string; content?: unknown; is_error?: boolean }> {
  const last = request?.messages?.at(-1);
  return Array.isArray(last?.content) ? (last.content as Array<{ type: string }>).filter((b) => b.type === 'tool_result') : [];
}

/** The text of a tool_result's content (a string or text blocks). */
function resultText(content: unknown): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((b: { text?: unknown }) => (typeof b.text === 'string' ? b.text : '')).join('');
  return '';
}

/** The file names in the remote's commit `rev`. */
function filesAt(repo: string, rev: string): string[] {
  return git(remotes.path(repo), 'ls-tree', '--name-only', rev).split('\n').sort();
}

const DECLARED = '{"outcome":"success","summary":"added hello.txt"}';

/**
 * Checks an attempt whose agent wrote `hello` to hello.txt, committed it as "add hello" and
 * declared DECLARED: it succeeded in its worktree on drover/implement-<number>, and Drover pushed
 * that branch and reports the remote's tip. Returns the tip.
 */
function expectHelloPushed(result: TaskResult, log: string, expected: { repo: string; number: number; base: string; worktree: string; hello: string }): string {
  const { repo, base, worktree, hello } = expected;
  const branch = `drover/implement-${expected.number}`;
  expect(result.outcome, `${result.summary}\n${log}`).toBe('success');
  expect(result.summary).toBe('added hello.txt');
  expect(log).toContain(`[drover] workspace ${worktree}: branch ${branch} at ${base}`);

  // What the remote holds: the agent's commit on the task branch, on top of main.
  const tip = remotes.tip(repo, branch);
  expect(tip).toMatch(/^[0-9a-f]{40}$/);
  expect(result.branch).toBe(branch);
  expect(result.rev).toBe(tip);
  expect(git(remotes.path(repo), 'show', `${tip}:hello.txt`)).toBe(hello);
  expect(git(remotes.path(repo), 'log', '-1', '--format=%s', tip)).toBe('add hello');
  expect(git(remotes.path(repo), 'rev-parse', `${tip}^`)).toBe(base);
  expect(filesAt(repo, tip)).toEqual(['README.md', 'hello.txt']);
  return tip;
}

/** Claude's script for "write hello.txt, commit it, declare success". */
function writeAndCommit(worktree: string, content: string) {
  return [
    turn(text('I will create hello.txt.'), toolUse('Write', { file_path: join(worktree, 'hello.txt'), content })),
    turn(text('Now I commit it.'), toolUse('Bash', { command: 'git add -A && git commit -m "add hello"', description: 'Commit hello.txt' })),
    turn(text(`Created and committed hello.txt.\n${DECLARED}`)),
  ];
}

describe('real agent CLIs on an SSH host, in Drover’s worktrees', () => {
  it('Claude Code (acceptEdits) writes and commits in the task’s worktree; Drover pushes drover/implement-<n> and reports the remote’s rev', { timeout: TIMEOUT }, async () => {
    const repo = 'acme/claude';
    const base = remotes.create(repo);
    const fake = await fakeAnthropic();
    const prompt = 'Add hello.txt with a greeting and commit it. (prompt 4f1c)';
    const { ctx, output, worktree } = attempt('implement', repo, 31, prompt);
    fake.script(writeAndCommit(worktree, 'hello from claude\n'));

    const result = await runner('claude-code', claudeCommand(fake, freshHome(), 'acceptEdits')).run(ctx);
    const tip = expectHelloPushed(result, output.join(''), { repo, number: 31, base, worktree, hello: 'hello from claude' });

    const details = result.details as ResultDetails;
    expect(details).toMatchObject({ provider: 'claude-code', permissionMode: 'acceptEdits', sessionId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    expect(details.costUsd).toBeGreaterThan(0);
    // Three turns of the fake's default usage (100 in, 20 out each).
    expect(details.tokens).toEqual({ input: 300, output: 60, cacheRead: 0, cacheWrite: 0 });
    expect(details.permissionDenials).toBeUndefined();
    expect(details.workspace).toEqual({ push: 'pushed', kept: false, branch: 'drover/implement-31' });
    // The worktree is gone once the work is pushed.
    expect(existsSync(worktree)).toBe(false);

    // The model got Drover's prompt, and the commit ran in the worktree on the task branch.
    expect(fake.turnsServed).toBe(3);
    const turns = turnRequests(fake);
    expect(turns).toHaveLength(3);
    expect(JSON.stringify(turns[0]!.messages)).toContain(prompt);
    expect(JSON.stringify(turns[0])).toContain(`Primary working directory: ${worktree}`);
    const [wrote] = toolResults(turns[1]);
    expect(wrote?.is_error).not.toBe(true);
    const [committed] = toolResults(turns[2]);
    expect(committed?.is_error).not.toBe(true);
    expect(resultText(committed?.content)).toContain(`[drover/implement-31 ${tip.slice(0, 7)}`);
  });

  it('Claude Code in permission mode default: the Write is refused, the task fails, the worktree is kept, nothing is pushed', { timeout: TIMEOUT }, async () => {
    const repo = 'acme/denied';
    remotes.create(repo);
    const fake = await fakeAnthropic();
    const { ctx, output, worktree } = attempt('implement', repo, 32, 'Add hello.txt.');
    // The scripted agent claims success although its Write was refused.
    fake.script([turn(text('I will create hello.txt.'), toolUse('Write', { file_path: join(worktree, 'hello.txt'), content: 'hello\n' })), turn(text(`Created hello.txt.\n${DECLARED}`))]);

    const result = await runner('claude-code', claudeCommand(fake, freshHome(), 'default')).run(ctx);
    expect(result.outcome, `${result.summary}\n${output.join('')}`).toBe('fail');
    expect(result.summary).toContain('claude-code was refused 1 tool use in permission mode default: Write: ');
    expect(result.summary).toContain(join(worktree, 'hello.txt'));
    const details = result.details as ResultDetails;
    expect(details.permissionDenials).toEqual([{ tool: 'Write', input: { file_path: join(worktree, 'hello.txt'), content: 'hello\n' }, message: expect.any(String) }]);
    expect(details.workspace).toEqual({ push: 'nothing', kept: true, branch: 'drover/implement-32' });
    expect(result.branch).toBeUndefined();
    expect(result.rev).toBeUndefined();
    expect(fake.turnsServed).toBe(2);

    // Kept for people to look at, without the refused file; the remote has no task branch.
    expect(existsSync(worktree)).toBe(true);
    expect(existsSync(`${worktree}.kept`)).toBe(true);
    expect(existsSync(join(worktree, 'README.md'))).toBe(true);
    expect(existsSync(join(worktree, 'hello.txt'))).toBe(false);
    expect(remotes.tip(repo, 'drover/implement-32')).toBe('');
  });

  it('a session to resume that is gone: the CLI says so, Drover starts a fresh session in the same attempt and it succeeds', { timeout: TIMEOUT }, async () => {
    const repo = 'acme/resume';
    const base = remotes.create(repo);
    const fake = await fakeAnthropic();
    const dead = randomUUID();
    const prompt = 'Carry on: add hello.txt and commit it. (prompt 9b2e)';
    const { ctx, output, worktree } = attempt('implement', repo, 33, prompt, { sessionKey: 'acme/resume#33:dev' });
    fake.script(writeAndCommit(worktree, 'hello after a lost session\n'));
    const lookups: TaskInput[] = [];
    const sessions = async (input: TaskInput): Promise<EarlierSession> => {
      lookups.push(input);
      return { sessionId: dead, taskId: 'earlier', holder: { kind: 'host', id: HOST } };
    };

    const result = await runner('claude-code', claudeCommand(fake, freshHome(), 'acceptEdits'), { sessionResume: 'always', hooks: { sessions } }).run(ctx);
    const log = output.join('');
    expect(result.outcome, `${result.summary}\n${log}`).toBe('success');
    expect(lookups).toHaveLength(1);

    // The log tells the story: the resume was tried, the CLI did not have the session, a new one started.
    expect(log).toContain(`[drover] resuming session ${dead}`);
    expect(log).toContain(`No conversation found with session ID: ${dead}`);
    expect(log).toContain(`[drover] session ${dead} no longer exists; starting a new session`);
    expect(log.indexOf(`No conversation found with session ID: ${dead}`)).toBeLessThan(log.indexOf('no longer exists; starting a new session'));

    // The result carries the new session, the one the fresh run's init announced.
    const details = result.details as ResultDetails;
    const init = log
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((e) => e.type === 'system' && e.subtype === 'init');
    expect(init?.session_id).toMatch(/^[0-9a-f-]{36}$/);
    expect(init?.session_id).not.toBe(dead);
    expect(details.sessionId).toBe(init?.session_id);
    expect(details.sessionLost).toBeUndefined();
    expect(details.lostSessionId).toBeUndefined();

    // The failed resume asked the model nothing; the fresh run was exactly the script, from scratch.
    expect(fake.turnsServed).toBe(3);
    const turns = turnRequests(fake);
    expect(turns).toHaveLength(3);
    // A new conversation: one user message (the CLI adds its context beside it), nothing the model said before.
    expect(turns[0]!.messages!.map((m) => m.role).filter((r) => r !== 'system')).toEqual(['user']);
    expect(JSON.stringify(turns[0]!.messages)).toContain(prompt);

    // And the fresh run's work was pushed from the attempt's worktree.
    const tip = remotes.tip(repo, 'drover/implement-33');
    expect(result).toMatchObject({ branch: 'drover/implement-33', rev: tip });
    expect(git(remotes.path(repo), 'show', `${tip}:hello.txt`)).toBe('hello after a lost session');
    expect(git(remotes.path(repo), 'rev-parse', `${tip}^`)).toBe(base);
    expect(existsSync(worktree)).toBe(false);
  });

  it('OpenCode writes and commits in the task’s worktree; Drover pushes drover/implement-<n> and reports the remote’s rev', { timeout: TIMEOUT }, async () => {
    const repo = 'acme/opencode';
    const base = remotes.create(repo);
    const fake = await startFakeOpenAI();
    onTestFinished(() => fake.close());
    const prompt = 'Add hello.txt with a greeting and commit it. (prompt c0de)';
    const { ctx, output, worktree } = attempt('implement', repo, 34, prompt);
    fake.script(
      { text: 'Writing hello.txt.', toolCalls: [{ name: 'write', arguments: { filePath: join(worktree, 'hello.txt'), content: 'hello from opencode\n' } }] },
      { toolCalls: [{ name: 'bash', arguments: { command: 'git add -A && git commit -m "add hello"', description: 'Commit hello.txt' } }] },
      { text: `Created and committed hello.txt.\n${DECLARED}` },
    );

    const result = await runner('opencode', openCodeCommand(fake, freshHome())).run(ctx);
    const tip = expectHelloPushed(result, output.join(''), { repo, number: 34, base, worktree, hello: 'hello from opencode' });

    const details = result.details as ResultDetails;
    expect(details).toMatchObject({ provider: 'opencode', sessionId: expect.stringMatching(/^ses_/), steps: 3 });
    expect(details.costUsd).toBeGreaterThan(0);
    expect(details.tokens).toEqual({ input: 30, output: 15, cacheRead: 0, cacheWrite: 0 });
    expect(details.permissionDenials).toBeUndefined();
    expect(details.workspace).toEqual({ push: 'pushed', kept: false, branch: 'drover/implement-34' });
    expect(existsSync(worktree)).toBe(false);

    // The model got Drover's prompt, and the commit's output came back to it.
    expect(fake.remaining()).toBe(0);
    const chats = fake.chatRequests();
    expect(chats).toHaveLength(3);
    expect(JSON.stringify(chats[0]!.body?.messages)).toContain(prompt);
    expect(JSON.stringify(chats[2]!.body?.messages)).toContain(`[drover/implement-34 ${tip.slice(0, 7)}`);
    // Nothing but the chat API was asked (no npm install, no models.dev).
    expect(fake.requests.filter((r) => !r.path.startsWith('/v1/')).map((r) => `${r.method} ${r.path}`)).toEqual([]);
  });

  it('a review of a fork’s pull request: Claude reads the fork’s file in a detached worktree at refs/pull/<n>/head; nothing is pushed', { timeout: TIMEOUT }, async () => {
    const repo = 'acme/forked';
    remotes.create(repo);
    // The fork's commit exists on the base repository only as refs/pull/9/head.
    const work = remotes.clone(repo);
    git(work, 'checkout', '-q', '-b', 'fork-work', 'origin/main');
    const forkRev = commitFiles(work, { 'fork.txt': 'from a fork: 7f3a91\n' }, 'fork change');
    git(work, 'push', '-q', 'origin', 'HEAD:refs/pull/9/head');
    expect(git(remotes.path(repo), 'rev-parse', 'refs/pull/9/head')).toBe(forkRev);
    const headsBefore = git(remotes.path(repo), 'for-each-ref', '--format=%(refname) %(objectname)', 'refs/heads');

    const fake = await fakeAnthropic();
    const { ctx, output, worktree } = attempt('review', repo, 9, 'Review pull request #9.', { checkout: { remote: remotes.path(repo), branch: 'fork-work' } });
    fake.script([turn(text('Reading the change.'), toolUse('Read', { file_path: join(worktree, 'fork.txt') })), turn(text('Looks good.\n{"outcome":"success","summary":"reviewed: looks good"}'))]);

    const result = await runner('claude-code', claudeCommand(fake, freshHome(), 'default')).run(ctx);
    const log = output.join('');
    expect(result.outcome, `${result.summary}\n${log}`).toBe('success');
    expect(result.summary).toBe('reviewed: looks good');
    expect(log).toContain(`[drover] workspace ${worktree}: detached at ${forkRev}`);

    // The agent's Read of fork.txt in its working directory found the fork's content.
    expect(fake.turnsServed).toBe(2);
    const turns = turnRequests(fake);
    expect(JSON.stringify(turns[0])).toContain(`Primary working directory: ${worktree}`);
    const [read] = toolResults(turns[1]);
    expect(read?.is_error).not.toBe(true);
    expect(resultText(read?.content)).toContain('from a fork: 7f3a91');

    // Nothing pushed: the remote's branches are as they were; the worktree is removed.
    const details = result.details as ResultDetails;
    expect(details.permissionDenials).toBeUndefined();
    expect(details.workspace).toEqual({ push: 'off', kept: false });
    expect(result.branch).toBeUndefined();
    expect(result.rev).toBeUndefined();
    expect(git(remotes.path(repo), 'for-each-ref', '--format=%(refname) %(objectname)', 'refs/heads')).toBe(headsBefore);
    expect(existsSync(worktree)).toBe(false);
  });
});
