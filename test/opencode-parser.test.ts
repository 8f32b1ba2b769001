// Drover's OpenCode parser on what the real CLI printed: test/fixtures/opencode/<name>.jsonl is the
// stdout of a run of `opencode run --format json` (1.18.33) against the fake OpenAI-compatible API,
// <name>.meta.json its exit and stderr; test/opencode-cli.test.ts makes them
// (DROVER_RECORD_OPENCODE_FIXTURES=1). Unit tests, no processes.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { getProvider } from '../src/providers';
import type { AgentExit, ParserOptions, ResultDetails } from '../src/providers/types';

const FIXTURES = join(import.meta.dirname, 'fixtures', 'opencode');
/** The fake model's price in the recorded runs, USD per million tokens. */
const PRICE = { input: 1, output: 2, cache_read: 0.5 };

function feed(lines: string[], exit: AgentExit = { code: 0, signal: null }, stderr = '', options?: ParserOptions) {
  const parser = getProvider('opencode').parser(options);
  const progress = lines.map((l) => parser.line(l)).filter((p): p is string => p !== undefined);
  const result = parser.finish(exit, stderr);
  return { result, details: result.details as ResultDetails, progress, sessionId: parser.sessionId };
}

function replay(name: string, options?: ParserOptions) {
  const stdout = readFileSync(join(FIXTURES, `${name}.jsonl`), 'utf8');
  const meta = JSON.parse(readFileSync(join(FIXTURES, `${name}.meta.json`), 'utf8')) as { exit: AgentExit; stderr: string };
  const events = stdout
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  return { ...feed(stdout.split('\n'), meta.exit, meta.stderr, options), events, meta };
}

const ev = (type: string, part: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ type, timestamp: 1, sessionID: 'ses_1', part: { sessionID: 'ses_1', ...part }, ...extra });

describe('opencode parser on recorded runs', () => {
  it('a plain run: text summary, session id, cost and tokens from step_finish', () => {
    const { result, progress, sessionId, events } = replay('text');
    const id = events[0]?.sessionID as string;
    expect(id).toMatch(/^ses_/);
    expect(sessionId).toBe(id);
    expect(progress).toEqual(['All done here.']);
    expect(result).toEqual({
      outcome: 'success',
      summary: 'All done here.',
      details: {
        provider: 'opencode',
        steps: 1,
        sessionId: id,
        costUsd: (60 * PRICE.input + 40 * PRICE.cache_read + 20 * PRICE.output) / 1e6,
        tokens: { input: 60, output: 20, cacheRead: 40, cacheWrite: 0 },
        reasoningTokens: 8,
      },
    });
  });

  it('a resumed session keeps its id; each run reports only its own cost', () => {
    const first = replay('resume-first');
    const second = replay('resume-second');
    expect(second.sessionId).toBe(first.sessionId);
    expect(first.result.summary).toBe('First answer.');
    expect(second.result.summary).toBe('Second answer.');
    expect(first.details.tokens).toEqual({ input: 1000, output: 100, cacheRead: 0, cacheWrite: 0 });
    expect(second.details.tokens).toEqual({ input: 30, output: 10, cacheRead: 20, cacheWrite: 0 });
    expect(second.details.costUsd).toBeCloseTo((30 * PRICE.input + 20 * PRICE.cache_read + 10 * PRICE.output) / 1e6, 12);
  });

  it('a lost session: sessionLost, fail with the CLI’s reason, no session id', () => {
    const { result, sessionId, meta } = replay('session-lost');
    expect(meta.exit.code).toBe(1);
    expect(sessionId).toBeUndefined();
    expect(result).toEqual({
      outcome: 'fail',
      summary: 'opencode could not resume the session: Session not found',
      details: { provider: 'opencode', steps: 0, sessionLost: true, errors: ['Session not found'] },
    });
  });

  it('tool uses: progress per tool, the declared result of the final text', () => {
    const { result, details, progress } = replay('write-file');
    expect(progress).toEqual([
      'Writing the file.',
      'tool write: <repo>/hello.txt',
      'tool edit: <repo>/README.md',
      'Wrote hello.txt and edited the README.',
    ]);
    expect(result).toMatchObject({ outcome: 'success', summary: 'wrote hello.txt' });
    expect(details).toMatchObject({ steps: 3, tokens: { input: 30, output: 15, cacheRead: 0, cacheWrite: 0 } });
    expect(details.permissionDenials).toBeUndefined();
  });

  it('an ask auto-rejected headless is a refusal: fail by default, flag keeps the outcome', () => {
    const failed = replay('permission-ask');
    expect(failed.meta.exit.code).toBe(0);
    expect(failed.progress).toEqual(['permission denied: write: <repo>/hello.txt']);
    const denial = { tool: 'write', input: { filePath: '<repo>/hello.txt', content: 'nope\n' }, message: 'The user rejected permission to use this specific tool call.' };
    expect(failed.result).toMatchObject({ outcome: 'fail', summary: 'opencode was refused 1 tool use: write: <repo>/hello.txt' });
    expect(failed.details.permissionDenials).toEqual([denial]);
    const flagged = replay('permission-ask', { permissionDenials: 'flag' });
    expect(flagged.result).toMatchObject({ outcome: 'success', summary: 'done' });
    expect(flagged.details.permissionDenials).toEqual([denial]);
  });

  it('a deny rule is a refusal too', () => {
    const failed = replay('permission-deny');
    expect(failed.result.outcome).toBe('fail');
    expect(failed.result.summary).toBe('opencode was refused 1 tool use: bash: rm -f README.md\nThe agent said: left the README');
    expect(failed.details.permissionDenials).toEqual([
      {
        tool: 'bash',
        input: { command: 'rm -f README.md', description: 'Remove the README' },
        message: expect.stringMatching(/^The user has specified a rule which prevents you from using this specific tool call/),
      },
    ]);
    expect(replay('permission-deny', { permissionDenials: 'flag' }).result).toMatchObject({ outcome: 'success', summary: 'left the README' });
  });

  it('API errors fail with the provider’s message and status', () => {
    const bad = replay('api-error-400');
    expect(bad.result).toMatchObject({ outcome: 'fail', summary: 'Invalid value for messages: not today.' });
    expect(bad.details).toMatchObject({ errors: ['Invalid value for messages: not today.'], apiErrorStatus: 400, steps: 0 });
    expect(bad.details.sessionId).toMatch(/^ses_/);
    expect(bad.details.sessionLost).toBeUndefined();
    const down = replay('api-error-500');
    expect(down.result).toMatchObject({ outcome: 'fail', summary: 'The server had an error while processing your request.' });
    expect(down.details.apiErrorStatus).toBe(500);
  });
});

describe('opencode parser edge cases', () => {
  it('"Session not found" as an error event: lost, the dead id is not the session', () => {
    const { result, details, sessionId } = feed(
      [JSON.stringify({ type: 'error', timestamp: 1, sessionID: 'ses_dead', error: { name: 'NotFoundError', data: { message: 'Session not found: ses_dead' } } })],
      { code: 1, signal: null },
      '\u001b[91m\u001b[1mError: \u001b[0mSession not found\n\u001b[91m\u001b[1mError: \u001b[0mSession not found\n',
    );
    expect(sessionId).toBeUndefined();
    expect(result.outcome).toBe('fail');
    expect(details).toMatchObject({ sessionLost: true, lostSessionId: 'ses_dead', errors: ['Session not found: ses_dead', 'Session not found'] });
    expect(details.sessionId).toBeUndefined();
  });

  it('an auto-rejected ask only stderr tells of is still a refusal', () => {
    const { result, details } = feed([ev('step_start'), ev('step_finish', { cost: 0, tokens: { input: 1, output: 1, reasoning: 0, cache: { read: 0, write: 0 } } })], { code: 0, signal: null }, '! permission requested: external_directory (/etc/*); auto-rejecting\n');
    expect(result.outcome).toBe('fail');
    expect(details.permissionDenials).toEqual([{ tool: 'external_directory', input: { patterns: ['/etc/*'] }, message: 'auto-rejected (headless)' }]);
  });

  it('a call of a tool the session does not offer is listed, not a refusal', () => {
    const { result, details, progress } = feed([
      ev('tool_use', { tool: 'invalid', state: { status: 'completed', input: { tool: 'write', error: "Model tried to call unavailable tool 'write'. Available tools: bash." } } }),
      ev('text', { text: 'I cannot write files here.' }),
      ev('step_finish', { cost: 0.1 }),
    ]);
    expect(progress[0]).toBe("invalid tool call: write: Model tried to call unavailable tool 'write'. Available tools: bash.");
    expect(result).toMatchObject({ outcome: 'success', summary: 'I cannot write files here.' });
    expect(details.invalidToolCalls).toEqual([{ tool: 'write', message: "Model tried to call unavailable tool 'write'. Available tools: bash." }]);
    expect(details.permissionDenials).toBeUndefined();
  });

  it('a failed tool (not a refusal) is progress, not a failure', () => {
    const { result, details, progress } = feed([
      ev('tool_use', { tool: 'bash', state: { status: 'error', input: { command: 'false' }, error: 'exit 1' } }),
      ev('text', { text: 'ok' }),
    ]);
    expect(progress).toEqual(['tool bash: false failed: exit 1', 'ok']);
    expect(result.outcome).toBe('success');
    expect(details.permissionDenials).toBeUndefined();
  });

  it('no JSON events at all is a failure, not a silent success', () => {
    const { result } = feed(['plain text output', ''], { code: 0, signal: null });
    expect(result.outcome).toBe('fail');
    expect(result.summary).toContain('printed no JSON events');
  });

  it('a non-zero exit fails with the CLI’s error lines', () => {
    const { result, details } = feed([], { code: 1, signal: null }, 'some log\n\u001b[91m\u001b[1mError: \u001b[0mConfig file is not valid JSON\n');
    expect(result.summary).toBe('opencode failed (exit code 1): Config file is not valid JSON');
    expect(details.errors).toEqual(['Config file is not valid JSON']);
    expect(feed([], { code: null, signal: 'SIGKILL' }).result.summary).toBe('opencode failed (killed by signal SIGKILL)');
  });

  it('sums cost and tokens over steps, output including reasoning', () => {
    const tokens = (input: number, output: number, reasoning: number, read: number, write: number) => ({ total: 0, input, output, reasoning, cache: { read, write } });
    const { details } = feed([
      ev('step_finish', { reason: 'tool-calls', cost: 0.25, tokens: tokens(100, 10, 5, 50, 20) }),
      ev('step_finish', { reason: 'stop', cost: 0.5, tokens: tokens(10, 1, 0, 150, 0) }),
      ev('text', { text: 'x' }),
    ]);
    expect(details).toMatchObject({ steps: 2, costUsd: 0.75, tokens: { input: 110, output: 16, cacheRead: 200, cacheWrite: 20 }, reasoningTokens: 5 });
  });
});
