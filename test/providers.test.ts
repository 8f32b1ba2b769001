// Providers read agent output into results; host keys are pinned. Unit tests, no processes.
import { describe, expect, it } from 'vitest';
import { getProvider } from '../src/providers';
import { declaredResult } from '../src/providers/result-line';
import { suggestedBranch } from '../src/run/env';
import { LogBuffer } from '../src/run/log-buffer';
import { blobKeyType, fingerprint, HostKeyError, hostKeyAlgorithms, matchesPins, parseHostKeyPins } from '../src/ssh/host-key';
import { isUsableSessionId, resumableSession, sessionKeyAttribute, sessionToResume } from '../src/sessions';
import { guessProvider } from '../src/agent/command';
import { readRefusedReport, sleep } from '../src/agent/agent';
import { getEventListeners } from 'node:events';
import { readFileSync as readFixture } from 'node:fs';
import type { ParserOptions, ResultDetails } from '../src/providers';

function feed(name: string, lines: unknown[], exit = { code: 0 as number | null, signal: null as string | null }, stderr = '') {
  const parser = getProvider(name).parser();
  const progress = lines.map((l) => parser.line(typeof l === 'string' ? l : JSON.stringify(l))).filter(Boolean);
  return { result: parser.finish(exit, stderr), progress, sessionId: parser.sessionId };
}

describe('claude-code', () => {
  const init = { type: 'system', subtype: 'init', session_id: 'sess-1', model: 'claude-x', tools: [] };
  it('reads init, messages, tool use and the result with summary and cost', () => {
    const { result, progress, sessionId } = feed('claude-code', [
      init,
      { type: 'assistant', message: { content: [{ type: 'text', text: 'Looking at the code\nmore' }] } },
      { type: 'assistant', message: { content: [{ type: 'tool_use', name: 'Edit', input: { file_path: 'src/a.ts' } }] } },
      { type: 'user', message: { content: [{ type: 'tool_result', content: 'ok' }] } },
      'not json at all',
      { type: 'result', subtype: 'success', is_error: false, result: 'Fixed the bug.', session_id: 'sess-1', total_cost_usd: 0.5, num_turns: 4, duration_ms: 1200 },
    ]);
    expect(sessionId).toBe('sess-1');
    expect(progress).toEqual(['session sess-1 started (claude-x)', 'Looking at the code', 'tool Edit: src/a.ts', 'finished: success']);
    expect(result).toEqual({
      outcome: 'success',
      summary: 'Fixed the bug.',
      details: { provider: 'claude-code', sessionId: 'sess-1', model: 'claude-x', costUsd: 0.5, numTurns: 4, durationMs: 1200, subtype: 'success' },
    });
  });

  it('takes a declared result from the last line of the final message', () => {
    const text = 'Opened a branch.\n{"outcome":"fork","summary":"split into two","branch":"drover/implement-3","rev":"0123abcd"}';
    const { result } = feed('claude-code', [init, { type: 'result', subtype: 'success', is_error: false, result: text, session_id: 'sess-1' }]);
    expect(result).toMatchObject({ outcome: 'fork', summary: 'split into two', branch: 'drover/implement-3', rev: '0123abcd' });
  });

  it('an error result or no result at all is a failure', () => {
    expect(feed('claude-code', [init, { type: 'result', subtype: 'error_max_turns', is_error: true, session_id: 'sess-1' }]).result).toMatchObject({
      outcome: 'fail',
      summary: 'claude-code failed (error_max_turns)',
    });
    const none = feed('claude-code', [init], { code: 1, signal: null }, 'Error: not logged in\n').result;
    expect(none.outcome).toBe('fail');
    expect(none.summary).toContain('without a result (exit code 1): Error: not logged in');
    expect(none.details?.sessionId).toBe('sess-1');
  });

  it('resumes with --resume', () => {
    expect(getProvider('claude-code').argv(['claude', '-p'], { resumeSessionId: 's' })).toEqual(['claude', '-p', '--resume', 's']);
    expect(getProvider('claude-code').argv(['claude', '-p'], {})).toEqual(['claude', '-p']);
  });
});

describe('claude-code: output captured from the real CLI (test/fixtures/claude-code, see claude-code-cli.test.ts)', () => {
  const lines = (name: string) => readFixture(new URL(`./fixtures/claude-code/${name}.jsonl`, import.meta.url), 'utf8').split('\n');
  const event = (name: string, type: string, subtype?: string) =>
    lines(name).map((l) => (l.trim() ? (JSON.parse(l) as Record<string, unknown>) : {})).find((e) => e.type === type && (subtype === undefined || e.subtype === subtype))!;
  function replay(name: string | string[], options?: ParserOptions, exit = { code: 0 as number | null, signal: null as string | null }, stderr = '') {
    const parser = getProvider('claude-code').parser(options);
    const progress = (typeof name === 'string' ? lines(name) : name).map((l) => parser.line(l)).filter(Boolean);
    const result = parser.finish(exit, stderr);
    return { result, details: result.details as ResultDetails, progress, sessionId: parser.sessionId };
  }

  it('a run that wrote a file: success, the declared summary, its cost and tokens', () => {
    const init = event('accept-edits-write', 'system', 'init');
    const { result, details, progress, sessionId } = replay('accept-edits-write');
    expect(sessionId).toBe(init.session_id);
    expect(result).toMatchObject({ outcome: 'success', summary: 'wrote hello.txt' });
    expect(details).toMatchObject({ provider: 'claude-code', sessionId: init.session_id, model: 'claude-opus-5-5', permissionMode: 'acceptEdits', subtype: 'success', numTurns: 2 });
    expect(details.costUsd).toBeCloseTo(0.0016, 10);
    expect(details.sessionCostUsd).toBeCloseTo(0.0016, 10);
    expect(details.tokens).toEqual({ input: 200, output: 40, cacheRead: 0, cacheWrite: 0 });
    expect(details.permissionDenials).toBeUndefined();
    expect(progress).toContain('tool Write: /work/repo/hello.txt');
    expect(progress.at(-1)).toBe('finished: success');
  });

  it('refused tool uses fail the task by default, whatever the agent claims; `flag` keeps its outcome and lists them', () => {
    const denial = { tool: 'Write', input: { file_path: '/work/repo/hello.txt', content: 'hello\n' }, message: expect.stringContaining("you haven't granted it yet") };
    const failed = replay('permission-denied');
    expect(failed.result.outcome).toBe('fail');
    expect(failed.result.summary).toBe('claude-code was refused 1 tool use in permission mode default: Write: /work/repo/hello.txt\nThe agent said: wrote hello.txt');
    expect(failed.details.permissionDenials).toEqual([denial]);
    expect(failed.progress).toContainEqual(expect.stringMatching(/^permission denied: Write: Claude requested permissions to write/));
    expect(failed.progress.at(-1)).toBe('finished: success (1 tool use refused)');
    expect(replay('permission-denied', { permissionDenials: 'fail' }).result.outcome).toBe('fail');

    const flagged = replay('permission-denied', { permissionDenials: 'flag' });
    expect(flagged.result).toMatchObject({ outcome: 'success', summary: 'wrote hello.txt' });
    expect(flagged.details.permissionDenials).toEqual([denial]);

    // Killed before its result line: the refusals seen on `permission_denied` lines still count.
    const cut = lines('permission-denied').filter((l) => !l.includes('"type":"result"'));
    const killed = replay(cut, {}, { code: null, signal: 'SIGKILL' });
    expect(killed.result.outcome).toBe('fail');
    expect(killed.result.summary).toMatch(/^claude-code was refused 1 tool use in permission mode default: Write\n.*without a result \(killed by signal SIGKILL\)/);
    expect(killed.details.permissionDenials).toEqual([{ tool: 'Write', message: expect.any(String) }]);
  });

  it('a session that could not be resumed: sessionLost, its dead id never offered as the session id, the reason from errors', () => {
    const dead = event('session-lost', 'result').session_id as string;
    const { result, details, sessionId } = replay('session-lost', {}, { code: 1, signal: null }, `No conversation found with session ID: ${dead}\n`);
    expect(sessionId).toBeUndefined();
    expect(result).toEqual({
      outcome: 'fail',
      summary: `claude-code failed (error_during_execution): No conversation found with session ID: ${dead}`,
      details: expect.objectContaining({ provider: 'claude-code', sessionLost: true, lostSessionId: dead, errors: [`No conversation found with session ID: ${dead}`] }),
    });
    expect(details.sessionId).toBeUndefined();
    // Only the message on stderr (no result line): the same.
    const bare = replay([], {}, { code: 1, signal: null }, `No conversation found with session ID: ${dead}\n`);
    expect(bare.details).toMatchObject({ sessionLost: true, lostSessionId: dead });
    expect(bare.details.sessionId).toBeUndefined();
  });

  it('a resumed run: its own cost (model_usage_since_last_result) apart from the session’s (total_cost_usd); its own tokens (usage)', () => {
    const first = replay('resume-first');
    const { result, details } = replay('resume-second');
    expect(result).toMatchObject({ outcome: 'success', summary: 'second' });
    expect(details.sessionId).toBe(first.details.sessionId);
    expect(details.costUsd).toBeCloseTo(0.01019, 10);
    expect(details.sessionCostUsd).toBeCloseTo(0.01179, 10);
    expect(details.sessionCostUsd!).toBeCloseTo(first.details.costUsd! + details.costUsd!, 10);
    expect(details.tokens).toEqual({ input: 2000, output: 100, cacheRead: 600, cacheWrite: 14 });
  });

  it('an API error ends with subtype "success" and is_error: a failure with the API’s message, never "success"', () => {
    const overloaded = replay('api-error-529', {}, { code: 1, signal: null });
    expect(overloaded.result.outcome).toBe('fail');
    expect(overloaded.result.summary).toMatch(/^claude-code failed \(api_error\): API Error: 529 Overloaded\./);
    expect(overloaded.details).toMatchObject({ subtype: 'api_error', apiErrorStatus: 529, apiErrorType: 'overloaded_error', costUsd: 0, sessionCostUsd: 0 });
    expect(overloaded.progress.at(-1)).toMatch(/^finished: api_error: API Error: 529 Overloaded/);
    expect(overloaded.progress).not.toContain('finished: success');
    const invalid = replay('api-error-400', {}, { code: 1, signal: null });
    expect(invalid.result).toMatchObject({ outcome: 'fail', summary: 'claude-code failed (api_error): API Error: 400 messages: text content blocks must be non-empty' });
    expect(invalid.details).toMatchObject({ subtype: 'api_error', apiErrorStatus: 400, apiErrorType: 'invalid_request_error' });
  });

  it('error_max_turns has no result text: the reason comes from errors', () => {
    const { result, details, progress } = replay('max-turns', {}, { code: 1, signal: null });
    expect(result).toMatchObject({ outcome: 'fail', summary: 'claude-code failed (error_max_turns): Reached maximum number of turns (1)' });
    expect(details).toMatchObject({ subtype: 'error_max_turns', errors: ['Reached maximum number of turns (1)'], costUsd: 0.0008 });
    expect(progress.at(-1)).toBe('finished: error_max_turns: Reached maximum number of turns (1)');
  });

  it('an empty final turn (result ""): the result declared in an earlier message counts', () => {
    expect(event('empty-final-turn', 'result').result).toBe('');
    expect(replay('empty-final-turn').result).toMatchObject({ outcome: 'fork', summary: 'split the work', branch: 'drover/implement-7', rev: '0123abcd' });
  });
});

describe('opencode', () => {
  const ev = (type: string, part: Record<string, unknown> = {}, extra: Record<string, unknown> = {}) => ({ type, timestamp: 1, sessionID: 'ses_1', part, ...extra });
  it('reads text, tool use, cost and the session', () => {
    const { result, progress, sessionId } = feed('opencode', [
      ev('step_start'),
      ev('tool_use', { tool: 'bash', state: { status: 'completed', input: { command: 'npm test' } } }),
      ev('text', { text: 'All tests pass.' }),
      ev('step_finish', { cost: 0.25, tokens: { input: 1, output: 2 } }),
      ev('step_finish', { cost: 0.5 }),
    ]);
    expect(sessionId).toBe('ses_1');
    expect(progress).toEqual(['tool bash: npm test', 'All tests pass.']);
    expect(result).toEqual({ outcome: 'success', summary: 'All tests pass.', details: { provider: 'opencode', steps: 2, sessionId: 'ses_1', costUsd: 0.75, tokens: { input: 1, output: 2, cacheRead: 0, cacheWrite: 0 } } });
  });

  it('an error event or a non-zero exit fails', () => {
    expect(feed('opencode', [ev('error', {}, { error: { name: 'APIError', data: { message: 'rate limited' } } })]).result).toMatchObject({ outcome: 'fail', summary: 'rate limited' });
    expect(feed('opencode', [ev('text', { text: 'hm' })], { code: 2, signal: null }, 'boom').result.summary).toBe('opencode failed (exit code 2): boom');
  });

  it('resumes with --session', () => {
    expect(getProvider('opencode').argv(['opencode', 'run', '--format', 'json'], { resumeSessionId: 'ses_1' })).toEqual(['opencode', 'run', '--format', 'json', '--session', 'ses_1']);
  });
});

describe('command', () => {
  it('a final JSON line is the result', () => {
    const { result } = feed('command', ['working…', '{"session_id":"c-1"}', '{"outcome":"success","summary":"pushed","branch":"fix/x","rev":"abcdef1"}']);
    expect(result).toEqual({ outcome: 'success', summary: 'pushed', branch: 'fix/x', rev: 'abcdef1', details: { provider: 'command', exitCode: 0, sessionId: 'c-1' } });
  });

  it('otherwise the exit code decides', () => {
    expect(feed('command', ['did things', 'last words']).result).toMatchObject({ outcome: 'success', summary: 'last words' });
    expect(feed('command', ['x'], { code: 3, signal: null }, 'it broke').result).toMatchObject({ outcome: 'fail', summary: 'command failed (exit code 3): it broke' });
    expect(feed('command', [], { code: null, signal: 'KILL' }).result.summary).toBe('command failed (killed by signal KILL)');
  });

  it('ignores malformed declarations and unsafe branch names', () => {
    expect(declaredResult('{"outcome":"maybe"}')).toBeUndefined();
    expect(declaredResult('{"outcome":"success","branch":"../../etc","rev":"zz"}')).toEqual({ outcome: 'success', summary: '' });
  });
});

describe('host keys', () => {
  const key = 'AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl';
  const blob = Buffer.from(key, 'base64');
  it('reads public keys, known_hosts lines and fingerprints', () => {
    expect(blobKeyType(blob)).toBe('ssh-ed25519');
    const pins = parseHostKeyPins(`ssh-ed25519 ${key} comment\n# a comment\n[h]:2222,10.0.0.1 ssh-ed25519 ${key}\n${fingerprint(blob)}`);
    expect(pins.map((p) => p.kind)).toEqual(['key', 'key', 'fingerprint']);
    expect(matchesPins(pins, blob)).toBe(true);
    expect(matchesPins(pins, Buffer.concat([blob, Buffer.from([0])]))).toBe(false);
    expect(hostKeyAlgorithms(parseHostKeyPins(`ssh-ed25519 ${key}`))).toEqual(['ssh-ed25519']);
    expect(hostKeyAlgorithms(pins)).toBeUndefined();
  });

  it('refuses what it cannot pin', () => {
    expect(() => parseHostKeyPins('')).toThrow(HostKeyError);
    expect(() => parseHostKeyPins('SHA256:short')).toThrow(/malformed/);
    expect(() => parseHostKeyPins(`@cert-authority * ssh-ed25519 ${key}`)).toThrow(/markers/);
    expect(() => parseHostKeyPins(`ssh-rsa ${key}`)).toThrow(/corrupt/);
    expect(() => parseHostKeyPins('hello world')).toThrow(/cannot read host key/);
  });
});

describe('small parts', () => {
  it('suggests safe branch names', () => {
    expect(suggestedBranch('implement:acme:web:42', { kind: 'implement', number: 42 })).toBe('drover/implement-42');
    expect(suggestedBranch('custom:$(x):0', { kind: 'custom', number: 0 })).toBe('drover/custom-custom-x-0');
  });

  it('keeps the head and the tail of a long log', () => {
    const log = new LogBuffer(10, 10);
    log.append('0123456789abcdefghij');
    log.append('KLMNOPQRSTUVWXYZ');
    expect(log.totalChars).toBe(36);
    expect(log.text()).toBe('0123456789\n[… 16 characters of output omitted …]\nQRSTUVWXYZ');
  });

  it('session keys: plain ones as they are, others digested; resume policy', () => {
    expect(sessionKeyAttribute('acme/web#42:dev')).toBe('acme/web#42:dev');
    expect(sessionKeyAttribute("x' OR 1=1")).toMatch(/^sha256-[0-9a-f]{64}$/);
    const earlier = { sessionId: 's', taskId: 't', holder: { kind: 'host' as const, id: 'h1' } };
    expect(sessionToResume(earlier, { kind: 'host', id: 'h1' }, 'same-instance')).toBe('s');
    expect(sessionToResume(earlier, { kind: 'host', id: 'h2' }, 'same-instance')).toBeUndefined();
    expect(sessionToResume(earlier, { kind: 'agent', id: 'h1' }, 'same-instance')).toBeUndefined();
    expect(sessionToResume(earlier, { kind: 'host', id: 'h2' }, 'always')).toBe('s');
    expect(sessionToResume(earlier, { kind: 'host', id: 'h1' }, 'never')).toBeUndefined();
  });

  it('offers only the session of a run that completed without failing: a failed or lost one never poisons its key', () => {
    const ok = { state: 'completed' as const, result: { outcome: 'success' as const, summary: 's', details: { sessionId: 'abc-1' } } };
    expect(resumableSession(ok)).toBe('abc-1');
    expect(resumableSession({ ...ok, result: { ...ok.result, outcome: 'fork' as const } })).toBe('abc-1');
    expect(resumableSession({ ...ok, result: { ...ok.result, outcome: 'fail' as const } })).toBeUndefined();
    expect(resumableSession({ ...ok, state: 'failed' as const })).toBeUndefined();
    expect(resumableSession({ ...ok, state: 'cancelled' as const })).toBeUndefined();
    expect(resumableSession({ ...ok, result: { ...ok.result, details: { sessionId: 'abc-1', sessionLost: true } } })).toBeUndefined();
    expect(resumableSession({ ...ok, result: { ...ok.result, details: {} } })).toBeUndefined();
  });

  it('never resumes a session id that an agent CLI would read as an option or that is not one word', () => {
    const here = { kind: 'host' as const, id: 'h1' };
    for (const sessionId of ['--dangerously-skip-permissions', '-p', '', ' x', 'a b', 'a\nb', "x'; touch /tmp/p; '", '$(id)', 'x'.repeat(201)]) {
      expect(sessionToResume({ sessionId, taskId: 't', holder: here }, here, 'always'), JSON.stringify(sessionId)).toBeUndefined();
      expect(isUsableSessionId(sessionId)).toBe(false);
    }
    for (const sessionId of ['0b6c1f5e-3c1d-4c59-9d55-2b1f3b1e9a10', 'ses_01JABCDEF', 'c-1']) expect(sessionToResume({ sessionId, taskId: 't', holder: here }, here, 'same-instance')).toBe(sessionId);
  });

  it('the pull agent’s waits leave no abort listener behind, and an abort ends one at once', async () => {
    const controller = new AbortController();
    for (let i = 0; i < 20; i++) await sleep(1, controller.signal);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
    const long = sleep(3_600_000, controller.signal);
    controller.abort();
    await long;
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
  });

  it('guesses the provider from the command', () => {
    expect(guessProvider(['/usr/local/bin/claude', '-p'])).toBe('claude-code');
    expect(guessProvider(['opencode', 'run'])).toBe('opencode');
    expect(guessProvider(['./my-agent.sh'])).toBe('command');
  });
});

describe('drover agent: a refused report, said as it happened', () => {
  it('task_closed after a try whose answer was lost: most likely that try was applied', () => {
    expect(readRefusedReport('complete (success)', 'task_closed', true)).toEqual({
      level: 'info',
      message: 'reported: complete (success) — most likely by an earlier try whose answer was lost: the task is closed',
    });
  });
  it('any other refusal, or task_closed at the first try: the task went on without this agent', () => {
    for (const [code, unanswered] of [['task_closed', false], ['not_lease_holder', true], ['stale_attempt', false], [undefined, true]] as const) {
      const read = readRefusedReport('fail', code, unanswered);
      expect(read.level).toBe('warn');
      expect(read.message).toBe(`could not report fail: the task is no longer ours (${code ?? 'refused'})`);
    }
  });
});
