// The real OpenCode CLI (the pinned native binary), run the way Drover runs it —
// `opencode run --format json [--session <id>]`, prompt on stdin, in a git repository — against a
// local fake of an OpenAI-compatible Chat Completions API, its stdout read by Drover's parser. Never
// a real model, never the internet: the only provider is the fake (`@ai-sdk/openai-compatible` is
// bundled in the binary), models.dev is not fetched (OPENCODE_DISABLE_MODELS_FETCH), the background
// `npm install @opencode-ai/plugin` into the config dir is pre-empted by a seeded config dir and
// pointed at the fake anyway (npm_config_registry; each test checks that nothing but /v1 was asked),
// and HOME/XDG_* are a fresh directory per test.
// DROVER_RECORD_OPENCODE_FIXTURES=1 writes the runs' stdout to test/fixtures/opencode/<name>.jsonl and
// their exit and stderr to <name>.meta.json (temporary paths and the fake's port replaced by
// placeholders), which test/opencode-parser.test.ts reads.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openCode } from '../src/providers/opencode';
import type { ParserOptions } from '../src/providers/types';
import {
  jsonLines,
  OPENCODE_BINARY,
  OPENCODE_PRICE,
  openCodeConfig,
  openCodeOfflineEnv,
  parseOutput,
  runDirs,
  seedOpenCodeHome,
  spawnCli,
  writeOpenCodeConfig,
  type CliRun,
} from './support/agent-cli';
import { startFakeOpenAI, type FakeOpenAI } from './support/fake-openai';

const FIXTURES = join(import.meta.dirname, 'fixtures', 'opencode');
const RECORD = process.env.DROVER_RECORD_OPENCODE_FIXTURES === '1';
const RUN_TIMEOUT_MS = 75_000;
const TEST_TIMEOUT_MS = 90_000;

const freshRunDir = runDirs('drover-opencode-cli-');

let fake: FakeOpenAI;
let dir: string;
let repo: string;
let home: string;

beforeEach(async () => {
  fake = await startFakeOpenAI();
  ({ dir, repo, home } = freshRunDir());
  seedOpenCodeHome(home);
});
afterEach(async () => {
  // Nothing but the chat API was asked: no npm registry, no models.dev (those are not this server
  // anyway, but npm_config_registry points here to catch an install).
  await fake.close();
  expect(fake.requests.filter((r) => !r.path.startsWith('/v1/')).map((r) => `${r.method} ${r.path}`)).toEqual([]);
});

/** The opencode.json for this test's fake, with `extra` on top. */
function config(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return openCodeConfig(fake.baseURL, extra);
}

/** Runs the real CLI in `repo` with the prompt on stdin; the config in $HOME/opencode.json via OPENCODE_CONFIG. */
async function opencode(
  args: string[],
  options: { prompt?: string; config?: Record<string, unknown>; parser?: ParserOptions } = {},
): Promise<CliRun> {
  const configPath = writeOpenCodeConfig(home, options.config ?? config());
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...openCodeOfflineEnv(home, configPath, fake.baseURL) };
  const { stdout, stderr, exit } = await spawnCli(OPENCODE_BINARY, ['run', '--format', 'json', ...args], {
    cwd: repo,
    env,
    stdin: options.prompt ?? 'Do the task.',
    timeoutMs: RUN_TIMEOUT_MS,
  });
  if (exit.signal === 'SIGKILL') throw new Error(`opencode did not finish in ${RUN_TIMEOUT_MS} ms\nstdout: ${stdout}\nstderr: ${stderr}`);
  return { stdout, stderr, exit, events: jsonLines(stdout), ...parseOutput(openCode, stdout, exit, stderr, options.parser) };
}

/** With DROVER_RECORD_OPENCODE_FIXTURES=1, keeps a run's output as a fixture for the parser tests. */
function record(name: string, run: CliRun): void {
  if (!RECORD) return;
  const port = new URL(fake.baseURL).port;
  const scrub = (text: string) => text.split(repo).join('<repo>').split(home).join('<home>').split(dir).join('<dir>').split(`127.0.0.1:${port}`).join('127.0.0.1:<port>');
  mkdirSync(FIXTURES, { recursive: true });
  writeFileSync(join(FIXTURES, `${name}.jsonl`), scrub(run.stdout));
  writeFileSync(join(FIXTURES, `${name}.meta.json`), `${JSON.stringify({ exit: run.exit, stderr: scrub(run.stderr) }, null, 2)}\n`);
}

function byType(run: CliRun, type: string): Array<Record<string, unknown>> {
  return run.events.filter((e) => e.type === type);
}

describe('the real opencode CLI against a fake OpenAI-compatible API', () => {
  it(
    'a plain run: the text is the summary; cost and tokens come from step_finish; the session id from the events',
    async () => {
      fake.script({ text: 'All done here.', usage: { prompt: 100, completion: 20, cached: 40, reasoning: 8 } });
      const run = await opencode([]);
      record('text', run);
      expect(run.exit).toEqual({ code: 0, signal: null });
      expect(run.stderr.trim()).toBe('');
      expect(byType(run, 'step_finish')).toHaveLength(1);
      expect(run.sessionId).toMatch(/^ses_/);
      expect(run.result).toMatchObject({ outcome: 'success', summary: 'All done here.' });
      expect(run.details).toMatchObject({ provider: 'opencode', sessionId: run.sessionId, steps: 1 });
      // opencode reports input without the cached part and output without reasoning: 60 + 40 cached, 12 + 8.
      expect(run.details.tokens).toEqual({ input: 60, output: 20, cacheRead: 40, cacheWrite: 0 });
      expect(run.details.costUsd).toBeCloseTo((60 * OPENCODE_PRICE.input + 40 * OPENCODE_PRICE.cache_read + 20 * OPENCODE_PRICE.output) / 1e6, 12);
      expect(run.details.sessionLost).toBeUndefined();
      expect(run.details.permissionDenials).toBeUndefined();
      // The main loop streamed with usage; the title was a side call answered outside the script.
      const [main] = fake.chatRequests();
      expect(main?.body).toMatchObject({ model: 'm', stream: true, stream_options: { include_usage: true } });
      expect(JSON.stringify(main?.body?.messages)).toContain('Do the task.');
      expect(fake.remaining()).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'resumes a session with --session: same id, the conversation goes on, cost and tokens are the run’s own',
    async () => {
      fake.script({ text: 'First answer.', usage: { prompt: 1000, completion: 100 } });
      const first = await opencode([], { prompt: 'First question.' });
      record('resume-first', first);
      expect(first.result.outcome).toBe('success');
      const id = first.sessionId;
      expect(id).toMatch(/^ses_/);

      fake.script({ text: 'Second answer.', usage: { prompt: 50, completion: 10, cached: 20 } });
      const argv = openCode.argv(['opencode', 'run', '--format', 'json'], { resumeSessionId: id });
      const second = await opencode(argv.slice(4), { prompt: 'Second question.' });
      record('resume-second', second);
      expect(argv.slice(4)).toEqual(['--session', id]);
      expect(second.result).toMatchObject({ outcome: 'success', summary: 'Second answer.' });
      expect(second.sessionId).toBe(id);
      expect(second.details.tokens).toEqual({ input: 30, output: 10, cacheRead: 20, cacheWrite: 0 });
      expect(second.details.costUsd).toBeCloseTo((30 * OPENCODE_PRICE.input + 20 * OPENCODE_PRICE.cache_read + 10 * OPENCODE_PRICE.output) / 1e6, 12);
      const last = fake.chatRequests().at(-1);
      const said = JSON.stringify(last?.body?.messages);
      expect(said).toContain('First question.');
      expect(said).toContain('First answer.');
      expect(said).toContain('Second question.');
    },
    2 * TEST_TIMEOUT_MS, // two runs
  );

  it(
    'a lost session: --session of an unknown id fails with sessionLost and reports no session id',
    async () => {
      const dead = 'ses_0123456789abcdefDEADBEEF00';
      const run = await opencode(['--session', dead]);
      record('session-lost', run);
      expect(run.exit.code).toBe(1);
      expect(run.stdout.trim()).toBe('');
      expect(run.stderr).toContain('Session not found');
      expect(run.result.outcome).toBe('fail');
      expect(run.result.summary).toContain('Session not found');
      expect(run.details.sessionLost).toBe(true);
      expect(run.details.sessionId).toBeUndefined();
      expect(run.sessionId).toBeUndefined();
      expect(JSON.stringify(run.details)).not.toContain(dead);
      expect(run.details.errors).toEqual(['Session not found']);
      expect(fake.chatRequests()).toHaveLength(0);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'the agent changes files: scripted write and edit tool calls create and change files in the repo',
    async () => {
      fake.script(
        { text: 'Writing the file.', toolCalls: [{ name: 'write', arguments: { filePath: join(repo, 'hello.txt'), content: 'hello from opencode\n' } }] },
        { toolCalls: [{ name: 'edit', arguments: { filePath: join(repo, 'README.md'), oldString: '# test repo', newString: '# test repo, edited' } }] },
        { text: 'Wrote hello.txt and edited the README.\n{"outcome":"success","summary":"wrote hello.txt"}' },
      );
      const run = await opencode([]);
      record('write-file', run);
      expect(run.exit.code).toBe(0);
      expect(readFileSync(join(repo, 'hello.txt'), 'utf8')).toBe('hello from opencode\n');
      expect(readFileSync(join(repo, 'README.md'), 'utf8')).toBe('# test repo, edited\n');
      expect(execFileSync('git', ['-C', repo, 'status', '--porcelain'], { encoding: 'utf8' }).split('\n').filter(Boolean).sort()).toEqual([' M README.md', '?? hello.txt']);
      const tools = byType(run, 'tool_use').map((e) => e.part as { tool: string; state: { status: string } });
      expect(tools.map((t) => [t.tool, t.state.status])).toEqual([
        ['write', 'completed'],
        ['edit', 'completed'],
      ]);
      expect(run.progress).toContain(`tool write: ${join(repo, 'hello.txt')}`);
      expect(run.result).toMatchObject({ outcome: 'success', summary: 'wrote hello.txt' });
      expect(run.details.steps).toBe(3);
      expect(run.details.tokens).toEqual({ input: 30, output: 15, cacheRead: 0, cacheWrite: 0 });
      expect(run.details.permissionDenials).toBeUndefined();
      // The tool results went back to the model.
      expect(JSON.stringify(fake.chatRequests().at(-1)?.body?.messages)).toContain('Edit applied successfully.');
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'permission ask, headless: the CLI auto-rejects the tool use and stops; not a silent success',
    async () => {
      fake.script({ toolCalls: [{ name: 'write', arguments: { filePath: join(repo, 'hello.txt'), content: 'nope\n' } }] }, { text: 'Never reached.' });
      const run = await opencode([], { config: config({ permission: { edit: 'ask' } }) });
      record('permission-ask', run);
      expect(run.exit.code).toBe(0);
      expect(existsSync(join(repo, 'hello.txt'))).toBe(false);
      expect(run.stderr).toContain('permission requested: edit');
      expect(run.stderr).toContain('auto-rejecting');
      // The session stops at the rejection: the model is not asked again.
      expect(fake.chatRequests()).toHaveLength(1);
      expect(run.result.outcome).toBe('fail');
      expect(run.result.summary).toContain('opencode was refused 1 tool use: write: ');
      expect(run.details.permissionDenials).toEqual([
        { tool: 'write', input: { filePath: join(repo, 'hello.txt'), content: 'nope\n' }, message: 'The user rejected permission to use this specific tool call.' },
      ]);
      // flag: the outcome stays the agent's, the refusals are listed.
      const flagged = parseOutput(openCode, run.stdout, run.exit, run.stderr, { permissionDenials: 'flag' });
      expect(flagged.result.outcome).toBe('success');
      expect(flagged.details.permissionDenials).toHaveLength(1);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'a deny rule refuses the tool use, the agent goes on; fail by default, flag keeps the outcome',
    async () => {
      fake.script(
        { toolCalls: [{ name: 'bash', arguments: { command: 'rm -f README.md', description: 'Remove the README' } }] },
        { text: 'I was not allowed to remove it.\n{"outcome":"success","summary":"left the README"}' },
      );
      const permission = { bash: { '*': 'allow', 'rm *': 'deny' } };
      const run = await opencode([], { config: config({ permission }) });
      record('permission-deny', run);
      expect(run.exit.code).toBe(0);
      expect(existsSync(join(repo, 'README.md'))).toBe(true);
      const tool = byType(run, 'tool_use')[0]?.part as { tool: string; state: { status: string; error: string } };
      expect(tool.tool).toBe('bash');
      expect(tool.state.status).toBe('error');
      expect(tool.state.error).toMatch(/^The user has specified a rule which prevents you from using this specific tool call/);
      expect(fake.chatRequests()).toHaveLength(2);
      expect(run.result.outcome).toBe('fail');
      expect(run.result.summary).toBe('opencode was refused 1 tool use: bash: rm -f README.md\nThe agent said: left the README');
      expect(run.details.permissionDenials).toMatchObject([{ tool: 'bash', input: { command: 'rm -f README.md' } }]);
      const flagged = parseOutput(openCode, run.stdout, run.exit, run.stderr, { permissionDenials: 'flag' });
      expect(flagged.result).toMatchObject({ outcome: 'success', summary: 'left the README' });
      expect(flagged.details.permissionDenials).toMatchObject([{ tool: 'bash', input: { command: 'rm -f README.md' } }]);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'an API error (HTTP 400, OpenAI error body) fails with its message, not retried',
    async () => {
      fake.script({ error: { status: 400, message: 'Invalid value for messages: not today.', type: 'invalid_request_error', code: 'invalid_value' } });
      const run = await opencode([]);
      record('api-error-400', run);
      expect(run.exit.code).toBe(1);
      expect(fake.chatRequests()).toHaveLength(1);
      const [error] = byType(run, 'error');
      expect(error?.error).toMatchObject({ name: 'APIError', data: { message: 'Invalid value for messages: not today.', statusCode: 400, isRetryable: false } });
      expect(run.result).toMatchObject({ outcome: 'fail', summary: 'Invalid value for messages: not today.' });
      expect(run.details).toMatchObject({ errors: ['Invalid value for messages: not today.'], apiErrorStatus: 400, sessionId: run.sessionId });
      expect(run.sessionId).toMatch(/^ses_/);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'a server error (HTTP 500) is retried a bounded number of times, then fails with its message',
    async () => {
      // retry-after-ms keeps the CLI's backoff short (without it: 2 s, 4 s, 8 s, 16 s, 30 s).
      fake.script({ error: { status: 500, message: 'The server had an error while processing your request.' }, times: 100, retryAfterMs: 10 });
      const run = await opencode([]);
      record('api-error-500', run);
      expect(run.exit.code).toBe(1);
      // opencode 1.18 retries a retryable error 5 times (SessionRetry RETRY_MAX_RETRIES), then gives up.
      expect(fake.chatRequests()).toHaveLength(6);
      expect(run.result).toMatchObject({ outcome: 'fail', summary: 'The server had an error while processing your request.' });
      expect(run.details.apiErrorStatus).toBe(500);
      expect(run.details.steps).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );

  it(
    'a transient server error is retried and the run succeeds',
    async () => {
      fake.script({ error: { status: 503, message: 'Service unavailable.' }, times: 2, retryAfterMs: 10 }, { text: 'Recovered.' });
      const run = await opencode([]);
      expect(run.exit.code).toBe(0);
      expect(fake.chatRequests()).toHaveLength(3);
      expect(run.result).toMatchObject({ outcome: 'success', summary: 'Recovered.' });
      expect(run.details.errors).toBeUndefined();
    },
    TEST_TIMEOUT_MS,
  );
});
