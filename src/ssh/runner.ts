// The SSH runner: runs an attempt's agent on one configured host. It connects (before the claim,
// so an unreachable host never takes a task), starts the wrapper script (../run/shell.ts) with the
// prompt on stdin and the task in the environment, reads the output through the provider, and
// stops the remote process group on cancel or timeout. A task that names a repository runs in a
// worktree of its own, made before the run and pushed and checked after it (src/workspace).
import { finished } from 'node:stream/promises';
import { endsTryOnly, runLost, RunUnsettledError, type PreparedRun, type RunContext, type Runner } from '../activities/runner';
import type { TaskResult } from '../model';
import { getProvider, type OutputParser, type ProviderName } from '../providers';
import { AgentStartError, driveAgentProcess, type AgentProcess } from '../run/agent-process';
import { taskEnvironment, withResumedSession } from '../run/env';
import { ALREADY_STARTED, FENCED, buildAttachScript, buildKillScript, buildListRunsScript, buildRenewScript, buildStartScript, RUN_GONE, runDirectory } from '../run/detached';
import { shellCommandLine } from '../run/shell';
import { isUsableSessionId, sessionToResume, type ResumePolicy, type SessionLookup } from '../sessions';
import { AttemptWorkspace, WorkspaceError, workspaceFailure, type ScriptExec, type WorkspaceSettings } from '../workspace/workspace';
import { SshConnection, SshConnectionError, type ExecChannel, type SshTarget } from './connection';

export interface SshHostSettings {
  target: SshTarget;
  workdir: string;
  /** Per agent type: provider and command argv. */
  agents: Record<string, { provider: ProviderName | string; command: string[]; permissionDenials?: 'fail' | 'flag' }>;
  killGraceMs: number;
  sessionResume: ResumePolicy;
  /** Tasks that name a repository run in a worktree of their own (see src/workspace); none: in `workdir`. */
  workspaces?: Omit<WorkspaceSettings, 'workdir'>;
}

export interface SshRunnerHooks {
  /** Finds the session of an earlier task with the same session key. */
  sessions?: SessionLookup;
  /** A connection could not be made (the host looks down): health takes it offline now. */
  onConnectFailure?(error: Error): void;
  /** The remote command is about to start (pid is its process group on the host). */
  onStarted?(event: { taskId: string; attempt: number; pid: number }): void;
  /** Diagnostics (session lookup failures and such). */
  warn?(message: string, error?: unknown): void;
}

/** The run of an attempt's fresh session, after the session it was to resume turned out gone. */
const FRESH_SESSION_SUFFIX = '.fresh';
const FRESH_SESSION_SUFFIX_AT_END = /\.fresh$/;

/** How long a spare connection may take to answer before it is taken for dead. */
const SPARE_PROBE_MS = 3_000;

export class SshRunner implements Runner {
  /**
   * One connection made ahead of need, so that an attempt does not wait for the SSH handshake.
   * Every run still gets a connection of its own (taken from here, or made on the spot).
   */
  private spare: Promise<SshConnection> | undefined;
  private closed = false;

  constructor(
    readonly host: SshHostSettings,
    private readonly hooks: SshRunnerHooks = {},
    private readonly options: { spareConnection?: boolean; renewIntervalMs?: number } = {},
  ) {}

  private refill(): void {
    if (this.closed || this.spare || this.options.spareConnection === false) return;
    const spare = SshConnection.connect(this.host.target);
    this.spare = spare;
    spare.then(
      (connection) => {
        if (this.closed) connection.end();
      },
      () => {
        if (this.spare === spare) this.spare = undefined;
      },
    );
  }

  /**
   * The spare connection, if it still answers: one made a while ago may have gone silent (a
   * partition leaves it open but dead), and an attempt must not claim over a dead connection.
   */
  private async takeSpare(): Promise<SshConnection | undefined> {
    const spare = this.spare;
    this.spare = undefined;
    const connection = await spare?.catch(() => undefined);
    if (connection?.open) {
      const answered = await connection.run('true', SPARE_PROBE_MS).then(
        (result) => result.code === 0,
        () => false,
      );
      if (answered) return connection;
    }
    connection?.end();
    return undefined;
  }

  /** Drops the spare connection (the host's workers are stopping). */
  close(): void {
    this.closed = true;
    void this.takeSpare().then((connection) => connection?.end());
  }

  async prepare(request: { signal: AbortSignal }): Promise<PreparedRun> {
    const connect = async () => {
      try {
        return await SshConnection.connect(this.host.target, request.signal);
      } catch (error) {
        if (!request.signal.aborted) this.hooks.onConnectFailure?.(error as Error);
        throw error;
      }
    };
    const spare = await this.takeSpare();
    const held = { connection: spare ?? (await connect()) };
    this.refill();
    return {
      run: async (context) => {
        // A spare may have died unnoticed (the host restarted): one fresh connection is tried then.
        const reconnect = spare
          ? async () => {
              held.connection.end();
              held.connection = await connect();
              return held.connection;
            }
          : undefined;
        return this.runOn(held.connection, context, reconnect).catch(async (error: unknown) => {
          // Whatever failed as the connection went down (a socket error surfacing raw from ssh2,
          // say) is the connection failing: this try ends, and the next attaches again.
          if (endsTryOnly(error) || (error as { nonRetryable?: boolean }).nonRetryable) throw error;
          const connection = held.connection;
          const closed = await Promise.race([connection.closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(!connection.open), 200))]);
          if (!closed) throw error;
          throw new SshConnectionError(`connection to host ${context.hostId} lost while following the run: ${(error as Error).message}`);
        });
      },
      close: () => held.connection.end(),
    };
  }

  async run(context: RunContext): Promise<TaskResult> {
    const prepared = await this.prepare(context);
    try {
      return await prepared.run(context);
    } finally {
      prepared.close();
    }
  }

  private async runOn(connection: SshConnection, context: RunContext, reconnect?: () => Promise<SshConnection>): Promise<TaskResult> {
    const { input } = context;
    const agent = this.host.agents[input.agentType];
    if (!agent) throw new Error(`host ${context.hostId} has no command for agent type ${input.agentType}`);
    const provider = getProvider(agent.provider);
    const resumeSessionId = await this.sessionToResume(context);

    const live = new LiveConnection(connection, reconnect);
    const exec: ScriptExec = (script, stdin, timeoutMs) => live.use((c) => c.run(shellCommandLine(script), timeoutMs, stdin));
    const workspace = this.host.workspaces ? AttemptWorkspace.of(exec, { ...this.host.workspaces, workdir: this.host.workdir }, context.taskId, input, context.runKey) : undefined;
    if (workspace) {
      context.progress(`preparing the workspace: ${workspace.plan.repo}`);
      try {
        context.output(await workspace.prepare());
      } catch (error) {
        // A fetch that failed may work on the next try; a missing ref or a bad remote never will.
        if (!(error instanceof WorkspaceError) || error.transient) throw error;
        return workspaceFailure(provider.name, error);
      }
    }

    const env = {
      ...taskEnvironment({ taskId: context.taskId, attempt: context.attempt, input, instanceId: context.hostId }),
      ...workspace?.environment(),
    };
    const follow = (key: string, sessionId: string | undefined) =>
      this.startAndFollow(live, context, {
        key,
        workdir: workspace?.dir ?? this.host.workdir,
        env: withResumedSession(env, sessionId),
        argv: provider.argv(agent.command, { resumeSessionId: sessionId }),
        parser: () => provider.parser({ permissionDenials: agent.permissionDenials ?? 'fail' }),
      });
    let result: TaskResult;
    try {
      result = await follow(context.runKey, resumeSessionId);
      // The session to resume is gone (another machine's, or cleaned up): once, a fresh session.
      if (resumeSessionId && result.details?.sessionLost === true) {
        context.output(`[drover] session ${resumeSessionId} no longer exists; starting a new session\n`);
        result = await follow(`${context.runKey}${FRESH_SESSION_SUFFIX}`, undefined);
      }
    } catch (error) {
      // The attempt is over without a result (cancelled, lost): its worktree is kept for a while, unpushed.
      if (workspace && !endsTryOnly(error)) await workspace.abandon();
      throw error;
    }
    if (workspace) {
      context.progress('finishing the workspace: push and verify');
      result = await workspace.finish(result);
    }
    return result;
  }

  private async sessionToResume(context: RunContext): Promise<string | undefined> {
    const { input } = context;
    if (!input.sessionKey || !this.hooks.sessions || this.host.sessionResume === 'never') return undefined;
    let resumeSessionId: string | undefined;
    try {
      const earlier = await this.hooks.sessions(input);
      resumeSessionId = sessionToResume(earlier, { kind: 'host', id: context.hostId }, this.host.sessionResume);
      if (earlier && !resumeSessionId) {
        const why = isUsableSessionId(earlier.sessionId) ? 'ran elsewhere' : 'has an id that cannot be passed to the agent';
        context.output(`[drover] session ${JSON.stringify(String(earlier.sessionId).slice(0, 200))} of ${earlier.taskId} ${why}; starting a new session\n`);
      }
    } catch (error) {
      // Resuming is a nicety: a lookup failure starts a fresh session.
      this.hooks.warn?.(`session lookup for ${context.taskId} failed`, error);
    }
    if (resumeSessionId) context.output(`[drover] resuming session ${resumeSessionId}\n`);
    return resumeSessionId;
  }

  /** Starts the detached run `key` (or finds it started) and follows it to its result. */
  private async startAndFollow(
    live: LiveConnection,
    context: RunContext,
    run: { key: string; workdir: string; env: Record<string, string>; argv: string[]; parser: () => OutputParser },
  ): Promise<TaskResult> {
    const prompt = Buffer.from(context.input.prompt, 'utf8');
    const dir = runDirectory(this.host.workdir, run.key);
    const killGraceSeconds = this.host.killGraceMs / 1000;
    // The run stops itself once unheld for this long: well inside the fence grace the workflow
    // waits out, leaving room for the kill grace and the watchdog's poll.
    const unheldSeconds = Math.max(2, Math.floor((context.fenceGraceMs - this.host.killGraceMs) / 1000) - 5);
    const startScript = buildStartScript({ dir, workdir: run.workdir, env: run.env, argv: run.argv, promptBytes: prompt.length, unheldSeconds, killGraceSeconds });
    const start = await live.use((c) => c.exec(shellCommandLine(startScript)));
    const connection = live.current;
    start.channel.on('error', () => {});
    start.channel.end(prompt);
    let startErr = '';
    start.channel.stderr.on('data', (chunk: Buffer) => void (startErr = (startErr + chunk.toString('utf8')).slice(-2_000)));
    start.channel.resume();
    const started = await start.exited;
    if (started.code === ALREADY_STARTED) {
      context.progress('attaching to the run started before');
    } else if (started.code !== 0) {
      throw runLost(`the agent did not start on ${context.hostId}: ${startErr.trim() || `exit code ${started.code ?? started.signal}`}`);
    }

    // Hold the run: renew its lease while this worker may (see RunContext.mayHold), and give it up
    // as lost once no renewal has reached the host for the fence grace (it has stopped itself).
    const held = new HeldRun(connection, dir, context, () => this.renewTimeoutMs);
    await held.renew();
    const lost = new AbortController();
    held.onLost = (reason) => lost.abort(reason);
    held.start(this.renewIntervalMs);
    context.progress('following the agent');
    try {
      const attach = await connection.exec(shellCommandLine(buildAttachScript({ dir, outOffset: 0, errOffset: 0 })));
      const { result, exit } = await driveAgentProcess({
        process: channelProcess(attach, context.hostId),
        parser: run.parser(),
        signal: context.signal,
        detach: AbortSignal.any([context.detach, lost.signal]),
        onOutput: context.output,
        onProgress: context.progress,
        onStarted: (pid) => {
          context.progress(`agent running (pid ${pid} on ${context.hostId})`);
          this.hooks.onStarted?.({ taskId: context.taskId, attempt: context.attempt, pid });
        },
        stopRun: () => this.runScript(connection, buildKillScript(dir, killGraceSeconds), this.host.killGraceMs + 10_000),
        killGraceMs: this.host.killGraceMs,
      }).catch(async (error: unknown) => {
        if (lost.signal.aborted) throw lost.signal.reason;
        if (error instanceof AgentStartError && error.exitCode === RUN_GONE) throw runLost(`the run on ${context.hostId} is gone: ${error.message}`);
        if (endsTryOnly(error)) throw error;
        // Anything else loses the attempt, once the run is stopped: it must not outlive the attempt.
        const stopped = await this.runScript(connection, buildKillScript(dir, killGraceSeconds), this.host.killGraceMs + 10_000).then(
          () => true,
          () => false,
        );
        if (!stopped) throw new RunUnsettledError(`${(error as Error).message}; the run could not be stopped, so it is followed again or fenced`);
        throw error;
      });
      // Stopped by the watchdog: no worker held it for the fence grace (the run's own exit says so).
      if (exit.code === FENCED && (await held.fenced())) throw runLost(`the run on ${context.hostId} stopped itself: no worker held it for the fence grace`);
      return result;
    } finally {
      held.stop();
    }
  }

  /** The runs under way on the host (their run keys): see buildListRunsScript. */
  async runsUnderWay(): Promise<string[]> {
    const connection = await SshConnection.connect(this.host.target);
    try {
      const result = await connection.run(shellCommandLine(buildListRunsScript(this.host.workdir)), this.renewTimeoutMs);
      // A fresh session's run belongs to its attempt's run key.
      const keys = result.stdout.split('\n').map((line) => line.trim().replace(FRESH_SESSION_SUFFIX_AT_END, ''));
      return [...new Set(keys.filter((line) => /^[A-Za-z0-9_.-]+$/.test(line)))];
    } finally {
      connection.end();
    }
  }

  /** How often a held run's lease is renewed, and how long one renewal may take. */
  private get renewIntervalMs(): number {
    return this.options.renewIntervalMs ?? 5_000;
  }
  private get renewTimeoutMs(): number {
    return 10_000;
  }

  private async runScript(connection: SshConnection, script: string, timeoutMs: number): Promise<void> {
    const target = connection.open ? connection : await SshConnection.connect(this.host.target);
    try {
      await target.run(shellCommandLine(script), timeoutMs);
    } finally {
      if (target !== connection) target.end();
    }
  }

}

/**
 * The run's connection. A spare connection may have died unnoticed (the host restarted): if the
 * first command on it fails, one fresh connection is made and the command tried again on it.
 */
class LiveConnection {
  private tried = false;
  constructor(
    public current: SshConnection,
    private readonly reconnect?: () => Promise<SshConnection>,
  ) {}

  async use<T>(command: (connection: SshConnection) => Promise<T>): Promise<T> {
    if (this.tried || !this.reconnect) return command(this.current);
    this.tried = true;
    try {
      return await command(this.current);
    } catch {
      this.current = await this.reconnect();
      return command(this.current);
    }
  }
}

/** An SSH channel as an agent process: it exits with the channel, and fails with the connection. */
function channelProcess({ channel, exited }: ExecChannel, hostId: string): AgentProcess {
  const exit = exited.then(
    async (status) => {
      // The exit status can arrive before the last output has been read: drain both streams first.
      await Promise.all([finished(channel, { writable: false }), finished(channel.stderr)]).catch(() => undefined);
      return status;
    },
    (error: Error) => {
      throw new SshConnectionError(`connection to host ${hostId} lost while the agent was running (${error.message})`);
    },
  );
  return { stdin: channel, stdout: channel, stderr: channel.stderr, exit };
}

/**
 * The worker's hold on a detached run: the lease renewed every few seconds over the run's
 * connection. Renewals stop while the worker may not hold the run (it lost touch with Temporal,
 * which may have given the attempt up); once none has reached the host for the fence grace, the
 * run has stopped itself, and the hold reports it lost.
 */
class HeldRun {
  onLost: (reason: Error) => void = () => {};
  private timer: NodeJS.Timeout | undefined;
  private lastHeldAt: number;
  private renewing = false;

  constructor(
    private readonly connection: SshConnection,
    private readonly dir: string,
    private readonly context: RunContext,
    private readonly timeoutMs: () => number,
  ) {
    this.lastHeldAt = context.lastHeldAt ?? Date.now();
  }

  /** One renewal; throws when the run is lost for good. */
  async renew(): Promise<void> {
    if (this.renewing) return;
    this.renewing = true;
    try {
      if (this.context.mayHold()) {
        const answer = await this.connection.run(shellCommandLine(buildRenewScript(this.dir)), this.timeoutMs()).catch(() => undefined);
        const word = answer?.stdout.trim();
        if (word === 'fenced') throw runLost(`the run on ${this.context.hostId} stopped itself: no worker held it for the fence grace`);
        if (word === 'held' || word === 'ended') {
          this.lastHeldAt = Date.now();
          this.context.held(this.lastHeldAt);
          return;
        }
      }
      const unheldMs = Date.now() - this.lastHeldAt;
      if (unheldMs > this.context.fenceGraceMs) {
        throw runLost(`the run on ${this.context.hostId} was not held for ${Math.round(unheldMs / 1000)} s: it has stopped itself`);
      }
    } finally {
      this.renewing = false;
    }
  }

  /** Did the watchdog stop the run? */
  async fenced(): Promise<boolean> {
    const answer = await this.connection.run(shellCommandLine(buildRenewScript(this.dir)), this.timeoutMs()).catch(() => undefined);
    return answer?.stdout.trim() === 'fenced';
  }

  start(intervalMs: number): void {
    this.timer = setInterval(() => {
      this.renew().catch((error: Error) => {
        this.stop();
        this.onLost(error);
      });
    }, intervalMs);
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }
}
