// The SSH runner: runs an attempt's agent on one configured host. It connects (before the claim,
// so an unreachable host never takes a task), starts the wrapper script (../run/shell.ts) with the
// prompt on stdin and the task in the environment, reads the output through the provider, and
// stops the remote process group on cancel or timeout. A dropped connection fails the attempt.
import { finished } from 'node:stream/promises';
import type { PreparedRun, RunContext, Runner } from '../activities/runner';
import type { TaskResult } from '../model';
import { getProvider, type ProviderName } from '../providers';
import { driveAgentProcess, type AgentProcess } from '../run/agent-process';
import { taskEnvironment } from '../run/env';
import { buildRunScript, shellCommandLine } from '../run/shell';
import { isUsableSessionId, sessionToResume, type ResumePolicy, type SessionLookup } from '../sessions';
import { SshConnection, SshConnectionError, type ExecChannel, type SshTarget } from './connection';

export interface SshHostSettings {
  target: SshTarget;
  workdir: string;
  /** Per agent type: provider and command argv. */
  agents: Record<string, { provider: ProviderName | string; command: string[] }>;
  killGraceMs: number;
  sessionResume: ResumePolicy;
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
    private readonly options: { spareConnection?: boolean } = {},
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

  private async takeSpare(): Promise<SshConnection | undefined> {
    const spare = this.spare;
    this.spare = undefined;
    const connection = await spare?.catch(() => undefined);
    if (connection?.open) return connection;
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
        return this.runOn(held.connection, context, reconnect);
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

    let resumeSessionId: string | undefined;
    if (input.sessionKey && this.hooks.sessions && this.host.sessionResume !== 'never') {
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
    }
    if (resumeSessionId) context.output(`[drover] resuming session ${resumeSessionId}\n`);

    const env = taskEnvironment({ taskId: context.taskId, attempt: context.attempt, input, instanceId: context.hostId, resumeSessionId });
    const argv = provider.argv(agent.command, { resumeSessionId });
    const prompt = Buffer.from(input.prompt, 'utf8');
    const script = buildRunScript({ workdir: this.host.workdir, env, argv, promptBytes: prompt.length, killGraceSeconds: this.host.killGraceMs / 1000 });
    let exec: ExecChannel;
    try {
      exec = await connection.exec(shellCommandLine(script));
    } catch (error) {
      if (!reconnect) throw error;
      connection = await reconnect();
      exec = await connection.exec(shellCommandLine(script));
    }
    context.progress('starting the agent');
    const { result } = await driveAgentProcess({
      process: channelProcess(exec, context.hostId),
      prompt,
      parser: provider.parser(),
      signal: context.signal,
      onOutput: context.output,
      onProgress: context.progress,
      onStarted: (pid) => {
        context.progress(`agent running (pid ${pid} on ${context.hostId})`);
        this.hooks.onStarted?.({ taskId: context.taskId, attempt: context.attempt, pid });
      },
      forceKill: (pid) => this.forceKill(connection, pid),
      killGraceMs: this.host.killGraceMs,
    });
    return result;
  }

  /** SIGKILL to the remote process group, over the run's connection or a fresh one. */
  private async forceKill(connection: SshConnection, pid: number): Promise<void> {
    const command = shellCommandLine(`kill -KILL -${pid} 2>/dev/null; exit 0`);
    if (connection.open) {
      await connection.run(command, 10_000);
      return;
    }
    const fresh = await SshConnection.connect(this.host.target);
    try {
      await fresh.run(command, 10_000);
    } finally {
      fresh.end();
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
