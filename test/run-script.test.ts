// The wrapper script every agent runs in, exercised locally with /bin/sh: quoting of hostile
// values, the prompt on stdin, stopping the process group, and the watchdog.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { driveAgentProcess, AgentStartError } from '../src/run/agent-process';
import { taskEnvironment } from '../src/run/env';
import { killLocalGroup, spawnLocalScript } from '../src/run/local';
import { buildRunScript, envAssignment, shellCommandLine, shellQuote } from '../src/run/shell';
import { getProvider } from '../src/providers';
import type { TaskInput } from '../src/model';
import { alive } from './support/process';

const dir = mkdtempSync(join(tmpdir(), 'drover-run-'));
const pwned = join(dir, 'pwned');
afterAll(() => rmSync(dir, { recursive: true, force: true }));

export const HOSTILE = [
  `$(touch ${pwned})`,
  `'; touch ${pwned}; rm -rf ~ #`,
  `\`touch ${pwned}\``,
  `line one\nline two; touch ${pwned}\n`,
  `"; touch ${pwned}; echo "`,
  `\\'\\"\\$HOME \${HOME} $HOME %s %n`,
  `-rf --help`,
  `ünïcødé ☃ \u0007 \t tab`,
];

const FAKE = join(import.meta.dirname, 'fixtures', 'fake-claude.mjs');


async function waitFor<T>(probe: () => T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

function input(over: Partial<TaskInput> = {}): TaskInput {
  return { agentType: 'dev', kind: 'implement', repo: 'acme/web', number: 7, title: 't', prompt: 'p', ...over };
}

describe('shell quoting', () => {
  it.each(HOSTILE)('a quoted word reaches the command verbatim: %j', (value) => {
    const out = execFileSync('/bin/sh', ['-c', `printf '%s' ${shellQuote(value)}`]).toString('utf8');
    expect(out).toBe(value);
    expect(existsSync(pwned)).toBe(false);
  });

  it('refuses NUL bytes in words and drops them from environment values', () => {
    expect(() => shellQuote('a\0b')).toThrow(/NUL/);
    expect(envAssignment('X', 'a\0b')).toBe(`'X=ab'`);
    expect(() => envAssignment('X=1; touch y', 'v')).toThrow(/invalid environment variable name/);
  });
});

describe('the command line sent over SSH, whatever the login shell', () => {
  // sshd runs it as `$SHELL -c <line>`; these are the login shells found on this machine.
  const shells = ['/bin/sh', '/bin/bash', '/bin/dash', '/bin/zsh', '/usr/bin/zsh', '/usr/bin/fish', '/bin/tcsh', '/usr/bin/tcsh', '/bin/csh'].filter((s) => existsSync(s));
  const values = [...HOSTILE, 'ends in a backslash\\', `x\\';touch ${pwned};#`, 'bang! %d %%', 'ÄÖÜ\u00a0'];
  const script = `printf '%s\\n' ${values.map(shellQuote).join(' ')}`;

  it('is one single-quoted word of plain characters: nothing for any shell to read into it', () => {
    const line = shellCommandLine(script);
    expect(line).toMatch(/^exec \/bin\/sh -c 'eval "\$\(printf "([ #&()*+,\-./0-9:;<=>?@A-Z[\]^_a-z{|}~]|\\[0-7]{3})*"\)"'$/);
  });

  it.each(shells)('%s passes the script to /bin/sh unchanged', (shell) => {
    const out = execFileSync(shell, ['-c', shellCommandLine(script)], { env: { ...process.env, HOME: dir } }).toString('utf8');
    expect(out).toBe(values.map((v) => `${v}\n`).join(''));
    expect(existsSync(pwned)).toBe(false);
  });
});

describe('the wrapper script, run locally', () => {
  it('delivers hostile prompt and task values verbatim and runs nothing', async () => {
    const prompt = HOSTILE.join('\n---\n');
    const task = input({ repo: HOSTILE[1]!, sessionKey: HOSTILE[0]!, url: HOSTILE[2]! });
    const env = taskEnvironment({ taskId: 'implement:acme:web:7', attempt: 1, input: task, instanceId: 'local' });
    const provider = getProvider('claude-code');
    const argv = provider.argv([process.execPath, FAKE, '--record', dir, '--declare', '{"outcome":"success","summary":"ok","branch":"drover/implement-7"}'], {});
    const bytes = Buffer.from(prompt, 'utf8');
    const script = buildRunScript({ workdir: dir, env, argv, promptBytes: bytes.length, killGraceSeconds: 1 });
    const output: string[] = [];
    const progress: string[] = [];
    const { result, pid } = await driveAgentProcess({
      process: spawnLocalScript(script),
      prompt: bytes,
      parser: provider.parser(),
      signal: new AbortController().signal,
      onOutput: (t) => output.push(t),
      onProgress: (p) => progress.push(p),
      killGraceMs: 1_000,
    });
    expect(pid).toBeGreaterThan(0);
    const record = JSON.parse(readFileSync(join(dir, 'implement:acme:web:7.1.json'), 'utf8'));
    expect(record.prompt).toBe(prompt);
    expect(record.env.DROVER_REPO).toBe(HOSTILE[1]);
    expect(record.env.DROVER_SESSION_KEY).toBe(HOSTILE[0]);
    expect(record.env.DROVER_TASK_URL).toBe(HOSTILE[2]);
    expect(record.env.DROVER_BRANCH).toBe('drover/implement-7');
    expect(record.cwd).toBe(dir);
    expect(existsSync(pwned)).toBe(false);
    expect(result).toMatchObject({ outcome: 'success', summary: 'ok', branch: 'drover/implement-7' });
    expect(result.details).toMatchObject({ provider: 'claude-code', costUsd: 0.0123 });
    expect(typeof result.details?.sessionId).toBe('string');
    expect(progress).toContain('tool Bash: git status');
    expect(output.join('')).toContain('"type":"result"');
    expect(output.join('')).not.toContain('drover-pid');
  });

  it('stops the whole process group when the run is aborted', async () => {
    const env = taskEnvironment({ taskId: 'stop-me', attempt: 1, input: input(), instanceId: 'local' });
    const argv = ['/bin/sh', '-c', `sleep 300 & echo $! > ${shellQuote(join(dir, 'child.pid'))}; exec ${shellQuote(process.execPath)} ${shellQuote(FAKE)} --record ${shellQuote(dir)} --hold`];
    const script = buildRunScript({ workdir: dir, env, argv, promptBytes: 2, killGraceSeconds: 1 });
    const abort = new AbortController();
    const run = driveAgentProcess({
      process: spawnLocalScript(script),
      prompt: Buffer.from('hi'),
      parser: getProvider('claude-code').parser(),
      signal: abort.signal,
      onOutput: () => {},
      onProgress: () => {},
      forceKill: (pid) => killLocalGroup(pid),
      killGraceMs: 1_000,
    });
    const record = await waitFor(() => (existsSync(join(dir, 'stop-me.1.json')) ? JSON.parse(readFileSync(join(dir, 'stop-me.1.json'), 'utf8')) : undefined), 'the agent to start');
    const sleeper = Number(readFileSync(join(dir, 'child.pid'), 'utf8'));
    expect(alive(record.pid)).toBe(true);
    expect(alive(sleeper)).toBe(true);
    abort.abort(new Error('cancelled by test'));
    await expect(run).rejects.toThrow('cancelled by test');
    await waitFor(() => (!alive(record.pid) && !alive(sleeper) ? true : undefined), 'the process group to be gone');
  });

  it('kills the agent when whoever started it goes away (stdin closes)', async () => {
    const env = taskEnvironment({ taskId: 'orphan', attempt: 1, input: input(), instanceId: 'local' });
    const script = buildRunScript({ workdir: dir, env, argv: [process.execPath, FAKE, '--record', dir, '--hold'], promptBytes: 0, killGraceSeconds: 1 });
    const proc = spawnLocalScript(script);
    proc.stdout.resume();
    proc.stderr.resume();
    const record = await waitFor(() => (existsSync(join(dir, 'orphan.1.json')) ? JSON.parse(readFileSync(join(dir, 'orphan.1.json'), 'utf8')) : undefined), 'the agent to start');
    proc.stdin.destroy(); // as if the caller died: its end of the pipe closes
    await proc.exit;
    await waitFor(() => (!alive(record.pid) ? true : undefined), 'the agent to be killed');
  });

  it('never starts the agent on a prompt cut short (stdin closed before all of it came)', async () => {
    const env = taskEnvironment({ taskId: 'short-prompt', attempt: 1, input: input(), instanceId: 'local' });
    const script = buildRunScript({ workdir: dir, env, argv: [process.execPath, FAKE, '--record', dir], promptBytes: 10, killGraceSeconds: 1 });
    const proc = spawnLocalScript(script);
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    proc.stdout.on('data', (c: Buffer) => out.push(c));
    proc.stderr.on('data', (c: Buffer) => err.push(c));
    proc.stdin.end('abc');
    expect(await proc.exit).toMatchObject({ code: 125 });
    expect(Buffer.concat(out).toString()).not.toContain('drover-pid');
    expect(Buffer.concat(err).toString()).toContain('the prompt did not arrive whole');
    expect(existsSync(join(dir, 'short-prompt.1.json'))).toBe(false);
  });

  it('reports a working directory that does not exist as a start failure', async () => {
    const script = buildRunScript({ workdir: join(dir, 'nope'), env: {}, argv: ['true'], promptBytes: 0, killGraceSeconds: 1 });
    await expect(
      driveAgentProcess({
        process: spawnLocalScript(script),
        prompt: Buffer.alloc(0),
        parser: getProvider('command').parser(),
        signal: new AbortController().signal,
        onOutput: () => {},
        onProgress: () => {},
        killGraceMs: 1_000,
      }),
    ).rejects.toThrow(AgentStartError);
  });
});
