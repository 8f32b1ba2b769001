// The real Claude Code CLI (the pinned native binary), run the way Drover runs it —
// `claude -p --output-format stream-json --verbose …`, prompt on stdin, in a git repository — against
// a local fake of the Anthropic Messages API, its stdout read by Drover's parser. Never a real model:
// ANTHROPIC_BASE_URL points at the fake and the environment is built from scratch.
// DROVER_RECORD_CLAUDE_FIXTURES=1 writes the runs' stdout to test/fixtures/claude-code/*.jsonl
// (temporary paths and the fake's port replaced by placeholders), which test/providers.test.ts reads.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { claudeCode } from '../src/providers/claude-code';
import type { ParserOptions } from '../src/providers';
import { CLAUDE_BINARY, claudeOfflineEnv, jsonLines, parseOutput, runDirs, spawnCli, type CliRun } from './support/agent-cli';
import { apiError, startFakeAnthropic, text, toolUse, turn, type FakeAnthropic } from './support/fake-anthropic';

const FIXTURES = join(import.meta.dirname, 'fixtures', 'claude-code');
const RECORD = process.env.DROVER_RECORD_CLAUDE_FIXTURES === '1';
const RUN_TIMEOUT_MS = 50_000;

const freshRunDir = runDirs('drover-claude-cli-');

let fake: FakeAnthropic;
let repo: string;
let home: string;

beforeEach(async () => {
  fake = await startFakeAnthropic();
  ({ repo, home } = freshRunDir());
});
afterEach(async () => {
  await fake.close();
});

/** Runs the real CLI in `repo` with the prompt on stdin. */
async function claude(args: string[], options: { prompt?: string; env?: Record<string, string>; parser?: ParserOptions } = {}): Promise<CliRun> {
  const env: Record<string, string> = { PATH: process.env.PATH ?? '/usr/bin:/bin', ...claudeOfflineEnv(home, fake.url), ...options.env };
  const { stdout, stderr, exit } = await spawnCli(CLAUDE_BINARY, ['-p', '--output-format', 'stream-json', '--verbose', ...args], {
    cwd: repo,
    env,
    stdin: options.prompt ?? 'Please create hello.txt.',
    timeoutMs: RUN_TIMEOUT_MS,
  });
  return { stdout, stderr, exit, events: jsonLines(stdout), ...parseOutput(claudeCode, stdout, exit, stderr.slice(-2_000), options.parser) };
}

/** The run's result line, as the CLI printed it. */
function resultLine(run: CliRun): Record<string, unknown> {
  const found = run.events.filter((e) => e.type === 'result');
  expect(found, run.stdout + run.stderr).toHaveLength(1);
  return found[0]!;
}

/** Keeps a run's stdout as a fixture (only when recording). */
function capture(name: string, run: CliRun): void {
  if (!RECORD) return;
  mkdirSync(FIXTURES, { recursive: true });
  const scrubbed = run.stdout
    .split(repo)
    .join('/work/repo')
    // The CLI's project directory under ~/.claude/projects is named after the working directory.
    .split(repo.replace(/[^A-Za-z0-9]/g, '-'))
    .join('-work-repo')
    .split(home)
    .join('/home/agent')
    .split(fake.url.replace('http://', ''))
    .join('127.0.0.1:8080')
    .replace(/"messaging_socket_path":"[^"]*"/g, '"messaging_socket_path":"/tmp/cc-socks/0.sock"');
  writeFileSync(join(FIXTURES, `${name}.jsonl`), scrubbed);
}

const DECLARED = '{"outcome":"success","summary":"wrote hello.txt"}';

describe('the real Claude Code CLI against a fake Anthropic API', () => {
  it('acceptEdits: a Write tool use creates the file; success with cost and tokens', { timeout: 60_000 }, async () => {
    fake.script([turn(text('I will create the file.'), toolUse('Write', { file_path: join(repo, 'hello.txt'), content: 'hello\n' })), turn(text(`Created hello.txt.\n${DECLARED}`))]);
    const run = await claude(['--permission-mode', 'acceptEdits']);
    capture('accept-edits-write', run);
    expect(run.exit.code, run.stderr).toBe(0);
    expect(readFileSync(join(repo, 'hello.txt'), 'utf8')).toBe('hello\n');
    expect(fake.turnsServed).toBe(2);
    const init = run.events.find((e) => e.type === 'system' && e.subtype === 'init');
    expect(init).toMatchObject({ permissionMode: 'acceptEdits', session_id: expect.any(String), model: expect.any(String) });
    expect(run.result).toMatchObject({ outcome: 'success', summary: 'wrote hello.txt' });
    expect(run.details).toMatchObject({ provider: 'claude-code', sessionId: init!.session_id, model: init!.model, permissionMode: 'acceptEdits', subtype: 'success', numTurns: 2 });
    // Two turns of the fake's default usage (100 in, 20 out each).
    expect(run.details.tokens).toEqual({ input: 200, output: 40, cacheRead: 0, cacheWrite: 0 });
    expect(run.details.costUsd).toBeGreaterThan(0);
    expect(run.details.sessionCostUsd).toBeCloseTo(run.details.costUsd!, 10);
    expect(run.details.permissionDenials).toBeUndefined();
    expect(run.details.sessionLost).toBeUndefined();
    expect(run.progress).toContain(`tool Write: ${join(repo, 'hello.txt')}`);
    expect(run.progress.at(-1)).toBe('finished: success');
  });

  it('permission mode default: the Write is refused; the parser fails the task, or flags the refusal', { timeout: 60_000 }, async () => {
    // The scripted agent claims success although its Write was refused.
    fake.script([turn(text('I will create the file.'), toolUse('Write', { file_path: join(repo, 'hello.txt'), content: 'hello\n' })), turn(text(`Created hello.txt.\n${DECLARED}`))]);
    const run = await claude(['--permission-mode', 'default']);
    capture('permission-denied', run);
    expect(existsSync(join(repo, 'hello.txt'))).toBe(false);
    const line = resultLine(run);
    expect(line).toMatchObject({ subtype: 'success', is_error: false, permission_denials: [{ tool_name: 'Write', tool_input: { file_path: join(repo, 'hello.txt') } }] });
    expect(run.events).toContainEqual(expect.objectContaining({ type: 'system', subtype: 'permission_denied', tool_name: 'Write' }));

    expect(run.result.outcome).toBe('fail');
    expect(run.result.summary).toContain('refused 1 tool use in permission mode default: Write: ');
    expect(run.result.summary).toContain(join(repo, 'hello.txt'));
    expect(run.details.permissionDenials).toEqual([
      { tool: 'Write', input: { file_path: join(repo, 'hello.txt'), content: 'hello\n' }, message: expect.stringContaining('requested permissions to write') },
    ]);
    expect(run.progress.some((p) => p.startsWith('permission denied: Write'))).toBe(true);

    const flagged = parseOutput(claudeCode, run.stdout, run.exit, run.stderr, { permissionDenials: 'flag' });
    expect(flagged.result).toMatchObject({ outcome: 'success', summary: 'wrote hello.txt' });
    expect(flagged.details.permissionDenials).toEqual(run.details.permissionDenials);
  });

  it('--resume of a session that does not exist: sessionLost, no session id, the reason from errors', { timeout: 60_000 }, async () => {
    const dead = randomUUID();
    const run = await claude(['--permission-mode', 'acceptEdits', '--resume', dead]);
    capture('session-lost', run);
    expect(run.exit.code).not.toBe(0);
    expect(fake.requests.filter((r) => r.kind === 'turn')).toHaveLength(0);
    expect(resultLine(run)).toMatchObject({ subtype: 'error_during_execution', is_error: true, session_id: dead, errors: [`No conversation found with session ID: ${dead}`] });
    expect(run.result.outcome).toBe('fail');
    expect(run.result.summary).toBe(`claude-code failed (error_during_execution): No conversation found with session ID: ${dead}`);
    expect(run.details.sessionLost).toBe(true);
    expect(run.details.sessionId).toBeUndefined();
    expect(run.sessionId).toBeUndefined();
    expect(run.details.lostSessionId).toBe(dead);
    expect(run.details.errors).toEqual([`No conversation found with session ID: ${dead}`]);
  });

  it('a resumed session: the run’s own cost apart from the session’s total; its own tokens', { timeout: 120_000 }, async () => {
    fake.script([turn(text('First run.'), toolUse('Write', { file_path: join(repo, 'one.txt'), content: '1\n' })), turn(text('First run done.'))]);
    const first = await claude(['--permission-mode', 'acceptEdits'], { prompt: 'first task' });
    capture('resume-first', first);
    expect(first.result.outcome, first.stdout).toBe('success');
    const sessionId = first.details.sessionId!;
    expect(sessionId).toMatch(/^[0-9a-f-]{36}$/);

    const usage = { input_tokens: 1000, output_tokens: 50, cache_read_input_tokens: 300, cache_creation_input_tokens: 7 };
    fake.script([
      { ...turn(text('Second run.'), toolUse('Write', { file_path: join(repo, 'two.txt'), content: '2\n' })), usage },
      { ...turn(text('Second run done.\n{"outcome":"success","summary":"second"}')), usage },
    ]);
    const before = fake.requests.length;
    const second = await claude(['--permission-mode', 'acceptEdits', '--resume', sessionId], { prompt: 'second task' });
    capture('resume-second', second);
    expect(second.exit.code, second.stderr).toBe(0);
    expect(readFileSync(join(repo, 'two.txt'), 'utf8')).toBe('2\n');
    // The conversation really went on: the second run's first request carries the first run's prompt.
    const resumedRequest = fake.requests.slice(before).find((r) => r.kind === 'turn');
    expect(JSON.stringify(resumedRequest?.body)).toContain('first task');

    const line = resultLine(second);
    const since = line.model_usage_since_last_result as Record<string, { costUSD: number }>;
    const own = Object.values(since).reduce((sum, m) => sum + m.costUSD, 0);
    expect(second.result).toMatchObject({ outcome: 'success', summary: 'second' });
    expect(second.details.sessionId).toBe(sessionId);
    expect(second.details.costUsd).toBeCloseTo(own, 10);
    expect(second.details.sessionCostUsd).toBeCloseTo(line.total_cost_usd as number, 10);
    expect(second.details.sessionCostUsd!).toBeCloseTo(first.details.costUsd! + second.details.costUsd!, 10);
    expect(second.details.costUsd!).toBeLessThan(second.details.sessionCostUsd!);
    expect(second.details.tokens).toEqual({ input: 2000, output: 100, cacheRead: 600, cacheWrite: 14 });
  });

  it('an API error (529 overloaded, retries off) fails with the API’s message, not "success"', { timeout: 60_000 }, async () => {
    fake.script([apiError(529, 'overloaded_error', 'Overloaded')]);
    const run = await claude(['--permission-mode', 'acceptEdits'], { env: { CLAUDE_CODE_MAX_RETRIES: '0' } });
    capture('api-error-529', run);
    expect(resultLine(run)).toMatchObject({ subtype: 'success', is_error: true, api_error_status: 529 });
    expect(run.result.outcome).toBe('fail');
    expect(run.result.summary).toMatch(/^claude-code failed \(api_error\): API Error: 529 Overloaded/);
    expect(run.details).toMatchObject({ subtype: 'api_error', apiErrorStatus: 529, apiErrorType: 'overloaded_error', costUsd: 0 });
    expect(run.progress.at(-1)).toMatch(/^finished: api_error: API Error: 529/);
    expect(run.progress).not.toContain('finished: success');
  });

  it('an API error (400 invalid_request_error) fails with the API’s message', { timeout: 60_000 }, async () => {
    // The CLI tries a 400 again with fewer beta features; the fake answers every try the same.
    fake.script([apiError(400, 'invalid_request_error', 'messages: text content blocks must be non-empty')]);
    const run = await claude(['--permission-mode', 'acceptEdits']);
    capture('api-error-400', run);
    expect(resultLine(run)).toMatchObject({ subtype: 'success', is_error: true, api_error_status: 400 });
    expect(run.result.outcome).toBe('fail');
    expect(run.result.summary).toContain('messages: text content blocks must be non-empty');
    expect(run.details).toMatchObject({ subtype: 'api_error', apiErrorStatus: 400, apiErrorType: 'invalid_request_error' });
  });

  it('--max-turns 1 with a tool use: error_max_turns, the reason from errors', { timeout: 60_000 }, async () => {
    fake.script([turn(text('Starting.'), toolUse('Write', { file_path: join(repo, 'hello.txt'), content: 'hello\n' })), turn(text('never reached'))]);
    const run = await claude(['--permission-mode', 'acceptEdits', '--max-turns', '1']);
    capture('max-turns', run);
    const line = resultLine(run);
    expect(line).toMatchObject({ subtype: 'error_max_turns', is_error: true, errors: ['Reached maximum number of turns (1)'] });
    expect(line.result).toBeUndefined();
    expect(run.result).toEqual({
      outcome: 'fail',
      summary: 'claude-code failed (error_max_turns): Reached maximum number of turns (1)',
      details: expect.objectContaining({ subtype: 'error_max_turns', errors: ['Reached maximum number of turns (1)'], sessionId: line.session_id }),
    });
  });

  it('test/fixtures/fake-claude.mjs, the stand-in other tests use, prints lines with the real CLI’s fields', { timeout: 60_000 }, async () => {
    fake.script([turn(text('Looking.'), toolUse('Bash', { command: 'git status', description: 'check' })), turn(text('Done.'))]);
    const real = await claude(['--permission-mode', 'acceptEdits', '--allowedTools', 'Bash']);
    expect(real.result.outcome, real.stdout).toBe('success');
    const stand = (args: string[]) =>
      execFileSync(process.execPath, [join(import.meta.dirname, 'fixtures', 'fake-claude.mjs'), ...args], { cwd: repo, input: 'prompt', stdio: ['pipe', 'pipe', 'ignore'] })
        .toString('utf8')
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    const keys = (o: unknown) => Object.keys((o ?? {}) as object).sort();
    const shapes = (events: Array<Record<string, unknown>>) => {
      const init = events.find((e) => e.type === 'system' && e.subtype === 'init');
      const said = events.find((e) => e.type === 'assistant' && (e.message as { content: Array<{ type: string }> }).content[0]?.type === 'text');
      const user = events.find((e) => e.type === 'user');
      const result = events.find((e) => e.type === 'result');
      const message = (e: unknown) => (e as { message: Record<string, unknown> }).message;
      return {
        init: keys(init),
        assistant: keys(said),
        assistantMessage: keys(message(said)),
        usage: keys(message(said).usage),
        user: keys(user),
        userMessage: keys(message(user)),
        toolUseResult: keys(user?.tool_use_result),
        result: keys(result),
        resultUsage: keys(result?.usage),
        modelUsage: keys(Object.values((result?.model_usage_since_last_result ?? {}) as object)[0]),
      };
    };
    expect(shapes(stand(['--permission-mode', 'acceptEdits']))).toEqual(shapes(real.events));
    // An error result: the fields of the CLI's error results (`errors`, no `result`).
    const failed = stand(['--fail']).find((e) => e.type === 'result');
    const maxTurns = readFileSync(join(FIXTURES, 'max-turns.jsonl'), 'utf8')
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((e) => e.type === 'result');
    expect(keys(failed)).toEqual(keys(maxTurns));
  });

  it('an empty final turn: the result declared in an earlier message is kept', { timeout: 60_000 }, async () => {
    // The CLI asks again after an empty answer; the second empty answer ends the run with result "".
    fake.script([
      turn(text('All done.\n{"outcome":"fork","summary":"split the work","branch":"drover/implement-7","rev":"0123abcd"}'), toolUse('Bash', { command: 'git status', description: 'check' })),
      turn(),
      turn(),
    ]);
    const run = await claude(['--permission-mode', 'acceptEdits', '--allowedTools', 'Bash']);
    capture('empty-final-turn', run);
    expect(resultLine(run)).toMatchObject({ subtype: 'success', is_error: false, result: '' });
    expect(run.result).toMatchObject({ outcome: 'fork', summary: 'split the work', branch: 'drover/implement-7', rev: '0123abcd' });
  });
});
