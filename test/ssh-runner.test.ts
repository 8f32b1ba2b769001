// The SSH runner against real OpenSSH: hostile prompts, pinned host keys, cancel, dropped
// connections and session resume. No Temporal here (see ssh-hosts.test.ts for the whole path).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunContext } from '../src/activities/runner';
import type { TaskInput } from '../src/model';
import { SshConnection } from '../src/ssh/connection';
import { fingerprint, HostKeyError, parseHostKeyPins } from '../src/ssh/host-key';
import { SshRunner } from '../src/ssh/runner';
import { runKey } from '../src/run/detached';
import { sshTarget } from '../src/workers/ssh-hosts';
import { SshdFleet } from './support/sshd';
import { alive } from './support/process';
import { HOSTILE_STRINGS } from './support/hostile';

const FAKE = join(import.meta.dirname, 'fixtures', 'fake-claude.mjs');
let fleet: SshdFleet;

beforeAll(async () => {
  fleet = await SshdFleet.start(2, 'runner');
});
afterAll(async () => {
  await fleet?.stop();
});

function hostConfig(id: string, extraArgs: string[] = []) {
  const host = fleet.host(id);
  return fleet.hostConfig(id, {
    types: ['dev'],
    agents: { dev: { provider: 'claude-code', command: [process.execPath, FAKE, '--record', host.workdir, ...extraArgs] } },
  });
}

function runner(id: string, extraArgs: string[] = [], hooks: ConstructorParameters<typeof SshRunner>[1] = {}, options: ConstructorParameters<typeof SshRunner>[2] = {}) {
  const config = hostConfig(id, extraArgs);
  return new SshRunner(
    { target: sshTarget(config), workdir: config.workdir, agents: config.agents, killGraceMs: 1_000, sessionResume: 'same-instance' },
    hooks,
    options,
  );
}

function context(taskId: string, input: Partial<TaskInput> = {}, signal = new AbortController().signal, hostId = 'runner-1') {
  const output: string[] = [];
  const progress: string[] = [];
  const ctx: RunContext = {
    taskId,
    attempt: 1,
    hostId,
    input: { agentType: 'dev', kind: 'implement', repo: 'acme/web', number: 1, title: 't', prompt: 'do it', ...input },
    signal,
    runKey: runKey(taskId, 'run-1', 1),
    detach: new AbortController().signal,
    fenceGraceMs: 30_000,
    mayHold: () => true,
    held: () => {},
    progress: (m) => progress.push(m),
    output: (t) => output.push(t),
  };
  return { ctx, output, progress };
}

async function waitFor<T>(probe: () => T | undefined | Promise<T | undefined>, what: string, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const value = await probe();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const recordOf = (id: string, taskId: string, attempt = 1) => {
  const path = join(fleet.host(id).workdir, `${taskId}.${attempt}.json`);
  return existsSync(path) ? JSON.parse(readFileSync(path, 'utf8')) : undefined;
};


/** Asks the host itself whether a process is alive. */
async function aliveOnHost(id: string, pid: number): Promise<boolean> {
  const connection = await SshConnection.connect(sshTarget(hostConfig(id)));
  try {
    const result = await connection.run(`kill -0 ${pid} 2>/dev/null && echo alive || echo gone`, 5_000);
    return result.stdout.trim() === 'alive';
  } finally {
    connection.end();
  }
}

describe('SSH runner', () => {
  it('runs the agent in the working directory with the task in its environment and the prompt on stdin', async () => {
    const { ctx, output, progress } = context('plain:1', { sessionKey: 'acme/web#1:dev' });
    const result = await runner('runner-1').run(ctx);
    expect(result.outcome).toBe('success');
    expect(result.details).toMatchObject({ provider: 'claude-code', costUsd: 0.0123, numTurns: 3 });
    const record = recordOf('runner-1', 'plain:1');
    expect(record.prompt).toBe('do it');
    expect(record.cwd).toBe(fleet.host('runner-1').workdir);
    expect(record.env).toMatchObject({
      DROVER_TASK_ID: 'plain:1',
      DROVER_ATTEMPT: '1',
      DROVER_REPO: 'acme/web',
      DROVER_NUMBER: '1',
      DROVER_KIND: 'implement',
      DROVER_SESSION_KEY: 'acme/web#1:dev',
      DROVER_BRANCH: 'drover/implement-1',
      DROVER_INSTANCE: 'runner-1',
    });
    expect(progress.some((p) => p.startsWith('agent running (pid'))).toBe(true);
    expect(output.join('')).toContain('"subtype":"init"');
  });

  it('delivers hostile prompt and task strings verbatim and executes none of them', async () => {
    const pwned = join(fleet.dir, 'pwned');
    const hostile = HOSTILE_STRINGS(pwned);
    const prompt = hostile.join('\n');
    const { ctx } = context('hostile:1', { prompt, repo: hostile[0]!, title: hostile[1]!, url: hostile[2]!, sessionKey: hostile[3]! });
    const result = await runner('runner-1').run(ctx);
    expect(result.outcome).toBe('success');
    const record = recordOf('runner-1', 'hostile:1');
    expect(record.prompt).toBe(prompt);
    expect(record.env.DROVER_REPO).toBe(hostile[0]);
    expect(record.env.DROVER_TASK_URL).toBe(hostile[2]);
    expect(record.env.DROVER_SESSION_KEY).toBe(hostile[3]);
    expect(existsSync(pwned)).toBe(false);
    expect(existsSync(join(fleet.host('runner-1').workdir, 'pwned'))).toBe(false);
  });

  it('refuses a host whose key is not the pinned one, and accepts a pinned fingerprint', async () => {
    const config = hostConfig('runner-2');
    // Pinned by fingerprint: accepted.
    const pin = parseHostKeyPins(fleet.host('runner-2').hostKey)[0] as { kind: 'key'; blob: Buffer };
    const print = fingerprint(pin.blob);
    const byPrint = await SshConnection.connect({ ...sshTarget(config), hostKeyPins: parseHostKeyPins(print) });
    byPrint.end();
    // Another host's key pinned (an unknown key): refused.
    await expect(SshConnection.connect({ ...sshTarget(config), hostKeyPins: parseHostKeyPins(fleet.host('runner-1').hostKey) })).rejects.toThrow(HostKeyError);
    // The host is rebuilt with a new key: the old pin refuses it, with a message that says so.
    await fleet.rotateHostKey('runner-2');
    const error = await SshConnection.connect(sshTarget(config)).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(HostKeyError);
    expect((error as Error).message).toMatch(/host key of host runner-2 .* is not the pinned one: it presented SHA256:/);
    // The runner (still pinning the old key) declines before running anything.
    const { ctx } = context('refused:1');
    const stale = new SshRunner({ target: sshTarget(config), workdir: config.workdir, agents: config.agents, killGraceMs: 1_000, sessionResume: 'same-instance' });
    await expect(stale.prepare(ctx)).rejects.toThrow(HostKeyError);
    expect(recordOf('runner-2', 'refused:1')).toBeUndefined();
    // With the new key pinned it connects again.
    const fresh = await SshConnection.connect(sshTarget(hostConfig('runner-2')));
    fresh.end();
  });

  it('cancel kills the remote process group (checked on the host)', async () => {
    const abort = new AbortController();
    const { ctx } = context('cancel:1', {}, abort.signal);
    const run = runner('runner-1', ['--hold']).run(ctx);
    const record = await waitFor(() => recordOf('runner-1', 'cancel:1'), 'the agent to start');
    expect(await aliveOnHost('runner-1', record.pid)).toBe(true);
    abort.abort(new Error('cancelled'));
    await expect(run).rejects.toThrow('cancelled');
    await waitFor(async () => ((await aliveOnHost('runner-1', record.pid)) ? undefined : true), 'the agent to be killed on the host');
  });

  it('a connection dropped mid-run fails this try, not the run: the agent goes on, and the next try attaches to it', async () => {
    const { ctx } = context('drop:1', {}, undefined, 'runner-2');
    const failures: Error[] = [];
    const r = runner('runner-2', ['--hold'], { onConnectFailure: (e) => failures.push(e) }, { spareConnection: false });
    // Handled from the start: the try fails while the host's sshd is still being killed.
    const run = r.run(ctx).then(
      () => new Error('the run finished'),
      (error: Error) => error,
    );
    const started = await waitFor(() => recordOf('runner-2', 'drop:1'), 'the agent to start');
    await fleet.kill('runner-2'); // sshd dies; the machine (and the detached agent) does not
    try {
      const error = await run;
      // Lost while following the run, or, when sshd dies between the start and the follow, while
      // starting the follower: either way the connection failing, which ends this try only.
      expect(error.message).toMatch(/connection to host runner-2|cannot start a command on host runner-2/);
      expect((error as { retryable?: boolean }).retryable).toBe(true); // the next try attaches
      await expect(r.prepare(ctx)).rejects.toThrow(/cannot connect/);
      expect(failures).toHaveLength(1);
      expect(alive(started.pid)).toBe(true);
    } finally {
      await fleet.startHost(fleet.host('runner-2'));
    }
    // The next try of the same attempt attaches to the same run: no second agent.
    const again = context('drop:1', {}, undefined, 'runner-2');
    const attached = r.run(again.ctx);
    await waitFor(() => (again.progress.some((p) => p.startsWith('agent running')) ? true : undefined), 'the next try to attach');
    expect(again.progress).toContain('attaching to the run started before');
    writeFileSync(join(fleet.host('runner-2').workdir, 'drop:1.release'), '');
    expect((await attached).outcome).toBe('success');
    expect(recordOf('runner-2', 'drop:1').pid).toBe(started.pid);
    expect(again.output.join('')).toContain('"type":"result"');
  });

  it('a run that no worker holds stops itself within the fence grace', async () => {
    let holding = true;
    const { ctx } = context('fence:1');
    const fenced: RunContext = { ...ctx, fenceGraceMs: 8_000, mayHold: () => holding };
    const r = runner('runner-1', ['--hold'], {}, { spareConnection: false, renewIntervalMs: 500 });
    const run = r.run(fenced).then(
      () => new Error('the run finished'),
      (error: Error) => error,
    );
    const started = await waitFor(() => recordOf('runner-1', 'fence:1'), 'the agent to start');
    const stoppedHolding = Date.now();
    holding = false; // as a worker cut off from Temporal, or partitioned from the host, would
    const error = await run;
    expect(error.message).toMatch(/stopped itself|not held/);
    expect((error as { type?: string }).type).toBe('run_lost');
    expect(alive(started.pid)).toBe(false);
    expect(Date.now() - stoppedHolding).toBeLessThan(8_000 + 5_000);
  });

  it('a spare connection that died with its host is replaced by a fresh one', async () => {
    const r = runner('runner-2');
    const first = context('spare:1', {}, undefined, 'runner-2');
    expect((await r.run(first.ctx)).outcome).toBe('success'); // leaves a spare connection behind
    await fleet.restart('runner-2'); // the spare dies with the old sshd
    const second = context('spare:2', {}, undefined, 'runner-2');
    expect((await r.run(second.ctx)).outcome).toBe('success');
    expect(recordOf('runner-2', 'spare:2')).toBeDefined();
    r.close();
  });

  it('resumes the earlier session when it ran on this host, not when it ran elsewhere', async () => {
    const earlier = { sessionId: 'sess-123', taskId: 'implement:acme:web:5' };
    const here = runner('runner-1', [], { sessions: async () => ({ ...earlier, holder: { kind: 'host', id: 'runner-1' } }) });
    const { ctx, output } = context('resume:1', { sessionKey: 'acme/web#5:dev' });
    const result = await here.run(ctx);
    expect(recordOf('runner-1', 'resume:1').argv.slice(-2)).toEqual(['--resume', 'sess-123']);
    expect(recordOf('runner-1', 'resume:1').env.DROVER_RESUME_SESSION_ID).toBe('sess-123');
    expect(result.details?.sessionId).toBe('sess-123');
    expect(output.join('')).toContain('resuming session sess-123');

    const elsewhere = runner('runner-1', [], { sessions: async () => ({ ...earlier, holder: { kind: 'host', id: 'other' } }) });
    const second = context('resume:2', { sessionKey: 'acme/web#5:dev' });
    await elsewhere.run(second.ctx);
    expect(recordOf('runner-1', 'resume:2').argv).not.toContain('--resume');
  });

  it('does not pass a session id that would read as an option to the agent', async () => {
    const hostile = { sessionId: '--dangerously-skip-permissions', taskId: 'implement:acme:web:6', holder: { kind: 'host' as const, id: 'runner-1' } };
    const r = runner('runner-1', [], { sessions: async () => hostile });
    const { ctx, output } = context('resume:hostile', { sessionKey: 'acme/web#6:dev' });
    expect((await r.run(ctx)).outcome).toBe('success');
    const rec = recordOf('runner-1', 'resume:hostile');
    expect(rec.argv).not.toContain('--resume');
    expect(rec.argv).not.toContain('--dangerously-skip-permissions');
    expect(rec.env.DROVER_RESUME_SESSION_ID).toBeUndefined();
    expect(output.join('')).toContain('cannot be passed to the agent');
    r.close();
  });

  it('keeps a bounded log of a chatty agent', async () => {
    const { ctx, output } = context('chatty:1');
    const result = await runner('runner-1', ['--lines', '3000']).run(ctx);
    expect(result.outcome).toBe('success');
    expect(output.join('')).toContain('line 2999 of chatty:1');
  });
});
