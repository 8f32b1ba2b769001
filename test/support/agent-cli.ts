// The real agent CLIs (the pinned Claude Code and OpenCode native binaries) for tests that run
// them against the local fake model APIs: where the binaries are, the environment each needs to
// run offline (never a real model, never the internet), OpenCode's config, and reading a run's
// stdout with Drover's own parser.
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll } from 'vitest';
import type { TaskResult } from '../../src/model';
import type { ParserOptions, Provider, ResultDetails } from '../../src/providers';

const require = createRequire(import.meta.url);
export const CLAUDE_BINARY = join(dirname(require.resolve('@anthropic-ai/claude-code-linux-x64/package.json')), 'claude');
export const OPENCODE_BINARY = join(dirname(require.resolve('opencode-linux-x64/package.json')), 'bin', 'opencode');

/** How a CLI process ended. */
export type CliExit = { code: number | null; signal: string | null };

/** What Drover's parser made of a run's stdout. */
export interface ParsedOutput {
  result: TaskResult;
  details: ResultDetails;
  progress: string[];
  sessionId: string | undefined;
}

/** One run of a real CLI: its raw output, its JSON lines, and what Drover's parser read from it. */
export interface CliRun extends ParsedOutput {
  stdout: string;
  stderr: string;
  exit: CliExit;
  /** The stdout's JSON lines, parsed. */
  events: Array<Record<string, unknown>>;
}

/** Feeds stdout through a fresh parser of `provider`, line by line, as the runner does. */
export function parseOutput(provider: Provider, stdout: string, exit: CliExit, stderr: string, options?: ParserOptions): ParsedOutput {
  const parser = provider.parser(options);
  const progress = stdout.split('\n').map((l) => parser.line(l)).filter((p): p is string => p !== undefined);
  const result = parser.finish(exit, stderr);
  return { result, details: result.details as ResultDetails, progress, sessionId: parser.sessionId };
}

/** The non-blank lines of `stdout`, each parsed as JSON. */
export function jsonLines(stdout: string): Array<Record<string, unknown>> {
  return stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
}

/**
 * Runs `binary` with `stdin` as its input and collects its output; SIGKILLs it after `timeoutMs`
 * so that a CLI that hangs fails the test rather than the whole run (the exit then says SIGKILL).
 */
export async function spawnCli(
  binary: string,
  args: string[],
  options: { cwd: string; env: Record<string, string>; stdin: string; timeoutMs: number },
): Promise<{ stdout: string; stderr: string; exit: CliExit }> {
  const child = spawn(binary, args, { cwd: options.cwd, env: options.env, stdio: ['pipe', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  // A CLI that exits before reading its prompt closes the pipe: its exit tells, not an EPIPE.
  child.stdin.on('error', () => undefined);
  child.stdin.end(options.stdin);
  const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs);
  const exit = await new Promise<CliExit>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  }).finally(() => clearTimeout(timer));
  return { stdout, stderr, exit };
}

/**
 * A temporary root for one test file's runs, removed after its tests; returns a function that makes
 * a fresh directory in it with `repo`, a git repository with one commit (the CLIs run in one, as in
 * Drover's worktrees), and an empty `home` for the CLI's HOME.
 */
export function runDirs(prefix: string): () => { dir: string; repo: string; home: string } {
  const root = mkdtempSync(join(tmpdir(), prefix));
  afterAll(() => rmSync(root, { recursive: true, force: true }));
  return () => {
    const dir = mkdtempSync(join(root, 'run-'));
    const repo = join(dir, 'repo');
    const home = join(dir, 'home');
    mkdirSync(repo);
    mkdirSync(home);
    execFileSync('git', ['init', '-q', repo]);
    writeFileSync(join(repo, 'README.md'), '# test repo\n');
    execFileSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@example.com', 'add', '.']);
    execFileSync('git', ['-C', repo, '-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-qm', 'init']);
    return { dir, repo, home };
  };
}

/** `NAME=value` words for `env …`, for a host's agent command (its session environment is sshd's). */
export function envAssignments(env: Record<string, string>): string[] {
  return Object.entries(env).map(([k, v]) => `${k}=${v}`);
}

/**
 * What the real `claude` needs besides PATH to run against the fake Anthropic API at `fakeUrl`:
 * its own HOME, a key it never checks with Anthropic, and no updater, telemetry or other traffic.
 */
export function claudeOfflineEnv(home: string, fakeUrl: string): Record<string, string> {
  return {
    HOME: home,
    TMPDIR: tmpdir(),
    ANTHROPIC_BASE_URL: fakeUrl,
    ANTHROPIC_API_KEY: 'sk-ant-test-not-a-key',
    DISABLE_AUTOUPDATER: '1',
    CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC: '1',
    DISABLE_TELEMETRY: '1',
  };
}

/**
 * What the real `opencode` needs besides PATH to run against the fake OpenAI-compatible API at
 * `fakeBaseURL` with the config at `configPath`: HOME and XDG_* in `home`, no models.dev fetch, no
 * updates, default plugins or LSP downloads, and npm pointed at the fake so that an install would
 * show in its requests rather than reach the registry.
 */
export function openCodeOfflineEnv(home: string, configPath: string, fakeBaseURL: string): Record<string, string> {
  return {
    HOME: home,
    XDG_CONFIG_HOME: join(home, '.config'),
    XDG_DATA_HOME: join(home, '.local', 'share'),
    XDG_CACHE_HOME: join(home, '.cache'),
    XDG_STATE_HOME: join(home, '.local', 'state'),
    TMPDIR: tmpdir(),
    OPENCODE_CONFIG: configPath,
    OPENCODE_DISABLE_MODELS_FETCH: '1',
    OPENCODE_DISABLE_AUTOUPDATE: '1',
    OPENCODE_DISABLE_DEFAULT_PLUGINS: '1',
    OPENCODE_DISABLE_LSP_DOWNLOAD: '1',
    OPENCODE_PURE: '1',
    npm_config_registry: fakeBaseURL.replace(/\/v1$/, '/npm-registry/'),
  };
}

/** The fake model's price for OpenCode, USD per million tokens (opencode.json `cost`). */
export const OPENCODE_PRICE = { input: 1, output: 2, cache_read: 0.5, cache_write: 1.25 };

/** An opencode.json: the fake at `fakeBaseURL` as an OpenAI-compatible provider, its one model the default. */
export function openCodeConfig(fakeBaseURL: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    $schema: 'https://opencode.ai/config.json',
    provider: {
      fake: {
        npm: '@ai-sdk/openai-compatible',
        name: 'Fake',
        options: { baseURL: fakeBaseURL, apiKey: 'not-a-key' },
        models: { m: { name: 'Fake model', cost: OPENCODE_PRICE, limit: { context: 100_000, output: 8_000 } } },
      },
    },
    model: 'fake/m',
    ...extra,
  };
}

/** Writes `config` as `home`/opencode.json; returns its path (for OPENCODE_CONFIG). */
export function writeOpenCodeConfig(home: string, config: Record<string, unknown>): string {
  const configPath = join(home, 'opencode.json');
  writeFileSync(configPath, JSON.stringify(config, null, 2));
  return configPath;
}

/**
 * Seeds `home`/.config/opencode so that OpenCode does not npm-install @opencode-ai/plugin into it
 * in the background: it skips the install when the dir's node_modules exists and its
 * package.json/package-lock.json already list the package.
 */
export function seedOpenCodeHome(home: string): void {
  const configDir = join(home, '.config', 'opencode');
  mkdirSync(join(configDir, 'node_modules'), { recursive: true });
  const dependencies = { '@opencode-ai/plugin': '*' };
  writeFileSync(join(configDir, 'package.json'), JSON.stringify({ dependencies }));
  writeFileSync(join(configDir, 'package-lock.json'), JSON.stringify({ lockfileVersion: 3, packages: { '': { dependencies } } }));
}
