// Workspace credentials over real HTTP: a bare repository served by git's own smart-HTTP CGI
// (`git http-backend`) behind a small node:http server that wants Basic auth with a known token.
// Workspaces fetch and push with the token through the GIT_ASKPASS helper; the token must never
// show on a command line (every process is watched while the scripts run, and every git the
// scripts start is recorded by a shim), in the scripts' output, in the mirror's config or any
// file under .drover but the 0600 token file, nor in the agent's environment unless asked for.
import { execFileSync, spawn, type SpawnOptions } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLocalScript } from '../src/run/local';
import { workspacePlan, type WorkspacePlan } from '../src/workspace/plan';
import type { GitCredentials } from '../src/workspace/scripts';
import { WorkspaceError, Workspaces, type ScriptExec, type WorkspaceSettings } from '../src/workspace/workspace';
import { commitFiles, git, GitRemotes } from './support/git';
import { GitHttpServer } from './support/git-http';

const TOKEN = `tok-${Math.random().toString(36).slice(2)}-${Date.now().toString(36)}-s3cr3t`;
const USERNAME = 'drover-bot';
const REPO = 'acme/web';

/**
 * Watches every process on the machine from a thread of its own (so that this thread's HTTP
 * server is not held up): each /proc/<pid>/cmdline, and the environment of those it may read,
 * again and again until stopped. Reports the processes whose command line or environment held
 * the token, and the git processes it saw (proof that it watched while git ran).
 */
class ProcessWatch {
  private readonly flag = new Int32Array(new SharedArrayBuffer(4));
  private readonly worker: Worker;
  private readonly done: Promise<{ scans: number; leaks: string[]; gitSeen: string[] }>;
  /** Settles once the first whole scan is done: the watch is on. */
  readonly ready: Promise<void>;

  constructor(needle: string) {
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      const { readdirSync, readFileSync } = require('node:fs');
      const { flag, needle, self } = workerData;
      const leaks = new Set();
      const gitSeen = new Set();
      let scans = 0;
      for (;;) {
        const last = Atomics.load(flag, 0) === 1; // one whole scan after the stop was asked for
        scans += 1;
        for (const pid of readdirSync('/proc')) {
          if (!/^[0-9]+$/.test(pid) || Number(pid) === self) continue;
          let cmdline = '';
          try { cmdline = readFileSync('/proc/' + pid + '/cmdline', 'latin1'); } catch { continue; }
          const shown = cmdline.split('\\0').join(' ').trim();
          if (cmdline.includes(needle)) leaks.add('cmdline of ' + pid + ': ' + shown);
          if (/(^|\\/)git(-[a-z-]+)?( |$)/.test(shown)) gitSeen.add(pid + ': ' + shown.slice(0, 200));
          try {
            if (readFileSync('/proc/' + pid + '/environ', 'latin1').includes(needle)) leaks.add('environment of ' + pid + ': ' + shown);
          } catch {}
        }
        if (scans === 1) parentPort.postMessage({ started: true });
        if (last) break;
      }
      parentPort.postMessage({ scans, leaks: [...leaks], gitSeen: [...gitSeen] });
    `;
    this.worker = new Worker(code, { eval: true, workerData: { flag: this.flag, needle, self: process.pid } });
    this.ready = new Promise((resolve, reject) => {
      this.worker.once('message', () => resolve());
      this.worker.once('error', reject);
    });
    this.done = new Promise((resolve, reject) => {
      this.worker.on('message', (message: { started?: boolean; scans: number; leaks: string[]; gitSeen: string[] }) => {
        if (!message.started) resolve(message);
      });
      this.worker.once('error', reject);
    });
  }

  async stop(): Promise<{ scans: number; leaks: string[]; gitSeen: string[] }> {
    Atomics.store(this.flag, 0, 1);
    const result = await this.done;
    await this.worker.terminate();
    return result;
  }
}

const remotes = new GitRemotes();
const scratch = mkdtempSync(join(tmpdir(), 'drover-ws-cred-'));
/**
 * The scripts' home: not this machine's, but like many a machine's, its git config names a
 * credential helper (`store`, which writes what git hands it to ~/.git-credentials in clear).
 */
const home = join(scratch, 'home');
/** The home of the tests' own git commands: no config at all. */
const plainHome = join(scratch, 'plain-home');
/** The shim named `git` first on the scripts' PATH: records each git's argv and environment. */
const shimDir = join(scratch, 'shim');
const shimLog = join(scratch, 'shim-log');
let server: GitHttpServer;
let initial: string;
let remote: string;

beforeAll(async () => {
  initial = remotes.create(REPO);
  const bare = remotes.path(REPO);
  git(bare, 'config', 'http.receivepack', 'true');
  server = await GitHttpServer.start(remotes.root, { token: TOKEN });
  remote = `${server.base}/${REPO}.git`;

  mkdirSync(home);
  mkdirSync(plainHome);
  writeFileSync(join(home, '.gitconfig'), '[credential]\n\thelper = store\n');
  mkdirSync(shimDir);
  mkdirSync(shimLog, { mode: 0o700 });
  const realGit = execFileSync('/bin/sh', ['-c', 'command -v git'], { encoding: 'utf8' }).trim();
  writeFileSync(
    join(shimDir, 'git'),
    ['#!/bin/sh', `f=$(mktemp "${shimLog}/call.XXXXXX") || exit 99`, 'printf "%s\\0" "$@" > "$f.argv"', 'env > "$f.env"', `exec ${realGit} "$@"`, ''].join('\n'),
  );
  chmodSync(join(shimDir, 'git'), 0o755);
});
afterAll(async () => {
  await server?.close();
  rmSync(scratch, { recursive: true, force: true });
  rmSync(remotes.root, { recursive: true, force: true });
});

/** The scripts' environment: this process's without git or askpass settings, the shim first on PATH. */
function scriptEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [name, value] of Object.entries(process.env)) if (!/^(GIT_|SSH_ASKPASS)/.test(name)) env[name] = value;
  return { ...env, HOME: home, XDG_CONFIG_HOME: join(home, '.config'), GIT_CONFIG_NOSYSTEM: '1', PATH: `${shimDir}:${process.env.PATH}` };
}

interface Recorded {
  ws: Workspaces;
  /** Every script run, and what it printed. */
  runs: Array<{ script: string; stdin: Buffer; code: number | null; stdout: string; stderr: string }>;
}

function workspaces(credentials: GitCredentials | undefined, settings: Partial<WorkspaceSettings> = {}): Recorded {
  const runs: Recorded['runs'] = [];
  const exec: ScriptExec = async (script, stdin, timeoutMs) => {
    const answer = await runLocalScript(script, stdin, timeoutMs, scriptEnv());
    runs.push({ script, stdin, ...answer });
    return answer;
  };
  const workdir = mkdtempSync(join(scratch, 'workdir-'));
  const ws = new Workspaces(exec, { workdir, push: 'auto', keepFailedMs: 3_600_000, prepareTimeoutMs: 120_000, ...(credentials ? { credentials } : {}), ...settings });
  return { ws, runs };
}

function plan(number: number): WorkspacePlan {
  return workspacePlan(`implement:acme:web:${number}`, { kind: 'implement', repo: REPO, number, checkout: { remote } })!;
}

/** Every file under `dir` (symbolic links not followed). */
function filesUnder(dir: string): string[] {
  const files: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) files.push(...filesUnder(path));
    else if (entry.isFile()) files.push(path);
  }
  return files;
}

/** Files under `dir` that hold the token, but the credentials' own token file. */
function filesWithToken(dir: string): string[] {
  return filesUnder(dir).filter((path) => !path.endsWith('/.drover/credentials/token') && readFileSync(path).includes(TOKEN));
}

/**
 * Runs a command to its end without blocking this thread (its HTTP server answers git). Killed
 * after `timeoutMs`: a git that waits for a prompt shows as `status: null`.
 */
function run(command: string, args: string[], options: SpawnOptions & { timeoutMs?: number } = {}): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'], timeout: options.timeoutMs ?? 60_000, killSignal: 'SIGKILL' });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (chunk: Buffer) => (stdout += chunk.toString('utf8')));
    child.stderr!.on('data', (chunk: Buffer) => (stderr += chunk.toString('utf8')));
    child.once('error', reject);
    child.once('close', (status) => resolve({ status, stdout, stderr }));
  });
}

const mode = (path: string) => statSync(path).mode & 0o777;

describe('workspace credentials over smart HTTP', () => {
  it('the server wants the token: without it git is refused (the fixture works)', async () => {
    // Not through the shim: the URL below has the token in it, on purpose.
    const env = { ...scriptEnv(), PATH: process.env.PATH, HOME: plainHome, XDG_CONFIG_HOME: join(plainHome, '.config'), GIT_TERMINAL_PROMPT: '0' };
    const refused = await run('git', ['ls-remote', remote], { env });
    expect(refused.status).toBe(128);
    expect(refused.stderr).toMatch(/could not read Username for '.*': terminal prompts disabled/);
    // With the token in the URL (how Drover never does it), the server answers.
    const ok = await run('git', ['ls-remote', remote.replace('http://', `http://x:${TOKEN}@`), 'refs/heads/main'], { env });
    expect(ok.stderr).toBe('');
    expect(ok.stdout).toBe(`${initial}\trefs/heads/main\n`);
  }, 180_000);

  it('prepare, commit, finish with a token: the push reaches the server; the token shows on no command line, in no output, config or agent environment', async () => {
    const before = readdirSync(shimLog).length;
    const [usersBefore, urlsBefore] = [server.users.length, server.urls.length];
    const { ws, runs } = workspaces({ token: TOKEN, username: USERNAME });
    const p = plan(7);
    const watch = new ProcessWatch(TOKEN);
    let watched: Awaited<ReturnType<ProcessWatch['stop']>>;
    let rev: string;
    let prepared: Awaited<ReturnType<Workspaces['prepare']>>;
    let result: Awaited<ReturnType<Workspaces['finish']>>;
    let filesDuringRun: string[];
    try {
      await watch.ready;
      prepared = await ws.prepare(p, 'cred-1');
      expect(prepared).toMatchObject({ head: initial, branch: 'drover/implement-7', base: 'main', remoteBranchExisted: false });
      filesDuringRun = filesWithToken(join(ws.settings.workdir, '.drover'));
      rev = commitFiles(prepared.dir, { 'feature.txt': 'pushed over http\n' });
      result = await ws.finish(p, 'cred-1', { outcome: 'success', summary: 'done', rev });
    } finally {
      watched = await watch.stop();
    }

    // The push reached the server: the remote's branch is the commit.
    expect(result).toMatchObject({ outcome: 'success', branch: 'drover/implement-7', rev, details: { workspace: { push: 'pushed', kept: false } } });
    expect(remotes.tip(REPO, 'drover/implement-7')).toBe(rev);
    expect(git(remotes.path(REPO), 'show', `${rev}:feature.txt`)).toBe('pushed over http');
    // …authenticated with the token, as the configured user, after being asked for it.
    const users = server.users.slice(usersBefore);
    const urls = server.urls.slice(urlsBefore);
    expect(users.length).toBeGreaterThan(0);
    expect(new Set(users)).toEqual(new Set([USERNAME]));
    expect(urls.some((url) => url.includes('service=git-receive-pack'))).toBe(true);
    expect(urls.join('\n')).not.toContain(TOKEN);

    // No process had the token on its command line or in its environment while the scripts ran;
    // the watch saw git at work (it was looking).
    expect(watched.leaks).toEqual([]);
    expect(watched.scans).toBeGreaterThan(1);
    expect(watched.gitSeen.length, 'the process watch saw no git process').toBeGreaterThan(0);
    // Every git the scripts started (through the shim): no token in its argv or its environment.
    const calls = readdirSync(shimLog).filter((name) => name.endsWith('.argv'));
    expect(calls.length).toBeGreaterThan(before);
    const argvs = calls.map((name) => readFileSync(join(shimLog, name), 'utf8').split('\0').slice(0, -1));
    expect(argvs.some((argv) => argv.includes('fetch'))).toBe(true);
    expect(argvs.some((argv) => argv.includes('push'))).toBe(true);
    expect(argvs.some((argv) => argv.includes('ls-remote'))).toBe(true);
    for (const name of readdirSync(shimLog)) expect(readFileSync(join(shimLog, name), 'utf8').includes(TOKEN), name).toBe(false);
    // The scripts carry it on their stdin only: never in their text (sh -c's argv) or their output.
    expect(runs.length).toBeGreaterThanOrEqual(2);
    for (const run of runs) {
      expect(run.code).toBe(0);
      expect(run.stdin.includes(TOKEN)).toBe(true);
      expect(run.script).not.toContain(TOKEN);
      expect(run.stdout).not.toContain(TOKEN);
      expect(run.stderr).not.toContain(TOKEN);
    }

    // Stored once, 0600 in a 0700 directory; nowhere else under .drover (the mirror's config included).
    const drover = join(ws.settings.workdir, '.drover');
    const credentialsDir = join(drover, 'credentials');
    expect(prepared.credentialsDir).toBe(credentialsDir);
    expect(mode(credentialsDir)).toBe(0o700);
    expect(mode(join(credentialsDir, 'token'))).toBe(0o600);
    expect(mode(join(credentialsDir, 'username'))).toBe(0o600);
    expect(mode(join(credentialsDir, 'askpass')) & 0o077).toBe(0);
    expect(readFileSync(join(credentialsDir, 'token'), 'utf8')).toBe(TOKEN);
    expect(readFileSync(join(credentialsDir, 'askpass'), 'utf8')).not.toContain(TOKEN);
    expect(filesDuringRun).toEqual([]);
    expect(filesWithToken(drover)).toEqual([]);
    const mirror = join(drover, 'mirrors', 'acme', 'web.git');
    const config = git(mirror, 'config', '--list');
    expect(config).toContain(`remote.origin.url=${remote}`);
    expect(config).not.toContain(TOKEN);
    // Nor did git hand it to the credential helper the machine's git config names.
    expect(filesWithToken(home)).toEqual([]);

    // The agent's environment has no credentials unless agentCredentials is set.
    const env = ws.environment(p, prepared);
    expect(env.GIT_ASKPASS).toBeUndefined();
    expect(JSON.stringify(env)).not.toContain(TOKEN);
  }, 180_000);

  it('agentCredentials: the agent gets GIT_ASKPASS (never the token itself), and git with just that environment is let in', async () => {
    const { ws } = workspaces({ token: TOKEN, username: USERNAME }, { agentCredentials: true });
    const p = plan(8);
    const prepared = await ws.prepare(p, 'cred-agent');
    const env = ws.environment(p, prepared);
    expect(env).toMatchObject({ GIT_ASKPASS: `${prepared.credentialsDir}/askpass`, GIT_TERMINAL_PROMPT: '0', DROVER_WORKSPACE: prepared.dir });
    expect(JSON.stringify(env)).not.toContain(TOKEN);
    // The agent's home names a credential helper (`store`) as the scripts' does.
    const base = { PATH: process.env.PATH!, HOME: home, GIT_CONFIG_NOSYSTEM: '1' };
    const listed = await run('git', ['ls-remote', remote, 'refs/heads/main'], { cwd: prepared.dir, env: { ...base, ...env } });
    expect(listed.stderr).toBe('');
    expect(listed.status).toBe(0);
    expect(listed.stdout).toBe(`${initial}\trefs/heads/main\n`);
    // The agent can push with it too (push: agent).
    const rev = commitFiles(prepared.dir, { 'agent.txt': 'the agent pushed this\n' });
    const pushed = await run('git', ['push', '-q', 'origin', 'HEAD:refs/heads/drover/agent-8'], { cwd: prepared.dir, env: { ...base, ...env } });
    expect(pushed.stderr).toBe('');
    expect(remotes.tip(REPO, 'drover/agent-8')).toBe(rev);
    // The agent's own git did not hand the token to that helper either.
    expect(filesWithToken(home)).toEqual([]);

    // Without agentCredentials, the same environment gets nothing to authenticate with.
    const { ws: plain } = workspaces({ token: TOKEN, username: USERNAME });
    const p2 = plan(9);
    const other = await plain.prepare(p2, 'cred-plain');
    const bare = plain.environment(p2, other);
    expect(bare.GIT_ASKPASS).toBeUndefined();
    const refused = await run('git', ['ls-remote', remote], { env: { ...base, ...bare, GIT_TERMINAL_PROMPT: '0' } });
    expect(refused.status).toBe(128);
    await plain.finish(p2, 'cred-plain', { outcome: 'success', summary: 'nothing' });
    await ws.finish(p, 'cred-agent', { outcome: 'success', summary: 'nothing' });
  }, 180_000);

  it('without credentials (or with a wrong token) the fetch fails at once: a transient “fetching … failed” WorkspaceError, no prompt waited for', async () => {
    for (const credentials of [undefined, { token: 'not-the-token', username: USERNAME }]) {
      const { ws, runs } = workspaces(credentials);
      const error = await ws.prepare(plan(10), 'cred-none').catch((e: unknown) => e);
      expect(error).toBeInstanceOf(WorkspaceError);
      const message = (error as WorkspaceError).message;
      expect(message.startsWith(`fetching ${remote} failed: `), message).toBe(true);
      // No credentials: git would ask on the terminal, and the scripts say it must not.
      expect(message).toMatch(credentials ? /Authentication failed for/ : /could not read Username for '.*': terminal prompts disabled/);
      expect((error as WorkspaceError).transient).toBe(true);
      // The script ended by itself (exit 1 with its error), not killed at the prepare timeout.
      expect(runs.map((r) => r.code)).toEqual([1]);
      // Nothing is left of the attempt: no worktree, not even git's error output.
      expect(readdirSync(join(ws.settings.workdir, '.drover', 'worktrees'))).toEqual([]);
    }
  }, 180_000);
});
