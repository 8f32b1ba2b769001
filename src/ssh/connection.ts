// One SSH connection (ssh2, pure JS) to a configured host, with its host key checked against
// the pins: an unknown or changed key is refused with a HostKeyError, never trusted.
import { finished } from 'node:stream/promises';
import type { ClientChannel, ConnectConfig } from 'ssh2';
import ssh2 from 'ssh2';
import { fingerprint, HostKeyError, hostKeyAlgorithms, type HostKeyPin, matchesPins } from './host-key';

export interface SshTarget {
  hostId: string;
  address: string;
  port: number;
  user: string;
  privateKey: string | Buffer;
  passphrase?: string;
  hostKeyPins: readonly HostKeyPin[];
  connectTimeoutMs: number;
  /** Keepalives detect a dead peer: the connection fails after `keepaliveCountMax` unanswered ones. */
  keepaliveIntervalMs: number;
  keepaliveCountMax?: number;
}

export class SshConnectionError extends Error {
  override readonly name = 'SshConnectionError';
  /** A run whose connection dropped goes on: the next try attaches to it (see endsTryOnly). */
  readonly retryable = true;
}

export interface ExecResult {
  code: number | null;
  signal: string | null;
  stdout: string;
  stderr: string;
}

export interface ExecChannel {
  channel: ClientChannel;
  exited: Promise<{ code: number | null; signal: string | null }>;
}

export class SshConnection {
  private closedError: Error | undefined;
  private isClosed = false;
  /** Resolves when the connection is gone, with the reason. */
  readonly closed: Promise<Error>;

  private constructor(
    readonly target: SshTarget,
    private readonly client: ssh2.Client,
  ) {
    this.closed = new Promise((resolve) => {
      client.on('error', (error: Error) => {
        this.closedError ??= error;
      });
      client.on('close', () => {
        this.isClosed = true;
        resolve(this.closedError ?? new SshConnectionError(`connection to host ${target.hostId} closed`));
      });
    });
  }

  get open(): boolean {
    return !this.isClosed;
  }

  static connect(target: SshTarget, signal?: AbortSignal): Promise<SshConnection> {
    return new Promise((resolve, reject) => {
      const client = new ssh2.Client();
      let presented: string | undefined;
      let settled = false;
      const where = `${target.user}@${target.address}:${target.port}`;
      const fail = (error: Error) => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        client.end();
        client.destroy();
        reject(error);
      };
      const onAbort = () => fail(new SshConnectionError(`connecting to host ${target.hostId} aborted`));
      if (signal?.aborted) return onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      client.once('ready', () => {
        if (settled) return;
        settled = true;
        signal?.removeEventListener('abort', onAbort);
        resolve(new SshConnection(target, client));
      });
      client.on('error', (error: Error) => {
        if (presented) {
          fail(
            new HostKeyError(
              `host key of host ${target.hostId} (${where}) is not the pinned one: it presented ${presented}; ` +
                'refusing to connect (if the host was rebuilt, update its hostKey in the config)',
            ),
          );
        } else {
          fail(new SshConnectionError(`cannot connect to host ${target.hostId} (${where}): ${error.message}`));
        }
      });
      client.once('close', () => fail(new SshConnectionError(`connection to host ${target.hostId} (${where}) closed during setup`)));
      const algorithms = hostKeyAlgorithms(target.hostKeyPins);
      const config: ConnectConfig = {
        host: target.address,
        port: target.port,
        username: target.user,
        privateKey: target.privateKey,
        passphrase: target.passphrase,
        readyTimeout: target.connectTimeoutMs,
        keepaliveInterval: target.keepaliveIntervalMs,
        keepaliveCountMax: target.keepaliveCountMax ?? 3,
        hostVerifier: (key: Buffer) => {
          if (matchesPins(target.hostKeyPins, key)) return true;
          presented = fingerprint(key);
          return false;
        },
        ...(algorithms ? { algorithms: { serverHostKey: algorithms as NonNullable<ConnectConfig['algorithms']>['serverHostKey'] } } : {}),
      };
      try {
        client.connect(config);
      } catch (error) {
        fail(new SshConnectionError(`cannot connect to host ${target.hostId}: ${(error as Error).message}`));
      }
    });
  }

  /**
   * Starts `command` (run by the login shell). `exited` resolves with the exit status once the
   * channel has closed, and rejects when it closed without one (the connection died). Listeners are
   * attached inside ssh2's callback: a quick command's exit may arrive in the same packet batch.
   */
  exec(command: string): Promise<ExecChannel> {
    return new Promise((resolve, reject) => {
      if (this.isClosed) return reject(this.closedError ?? new SshConnectionError(`connection to host ${this.target.hostId} is closed`));
      this.client.exec(command, (error, channel) => {
        // A command that cannot even start is the connection failing (a run it concerns goes on).
        if (error) return reject(new SshConnectionError(`cannot start a command on host ${this.target.hostId}: ${error.message}`));
        const exited = new Promise<{ code: number | null; signal: string | null }>((resolveExit, rejectExit) => {
          let status: { code: number | null; signal: string | null } | undefined;
          channel.on('exit', (code: number | null, signal?: string) => {
            status = { code: code ?? null, signal: signal ?? null };
          });
          channel.on('close', () => {
            if (status) resolveExit(status);
            else rejectExit(new SshConnectionError(`connection to host ${this.target.hostId} lost while the command was running`));
          });
          void this.closed.then((reason) => {
            if (!status) rejectExit(new SshConnectionError(`connection to host ${this.target.hostId} lost while the command was running: ${reason.message}`));
          });
        });
        exited.catch(() => {}); // callers that only read output still see the rejection when they await it
        resolve({ channel, exited });
      });
    });
  }

  /** Runs a short command to its end and collects its output (bounded); `stdin` is written first, then closed. */
  async run(command: string, timeoutMs: number, stdin?: Buffer): Promise<ExecResult> {
    const { channel, exited } = await this.exec(command);
    if (stdin) {
      channel.on('error', () => {});
      channel.end(stdin);
    }
    let stdout = '';
    let stderr = '';
    channel.on('data', (chunk: Buffer) => {
      if (stdout.length < 65_536) stdout += chunk.toString('utf8');
    });
    channel.stderr.on('data', (chunk: Buffer) => {
      if (stderr.length < 65_536) stderr += chunk.toString('utf8');
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        channel.close();
        reject(new SshConnectionError(`command on host ${this.target.hostId} timed out after ${timeoutMs} ms`));
      }, timeoutMs);
    });
    try {
      const { code, signal } = await Promise.race([exited, timeout]);
      // Output read before the close but not yet delivered to the listeners flows now.
      await Promise.race([Promise.all([finished(channel, { writable: false }), finished(channel.stderr)]).catch(() => undefined), timeout]);
      return { code, signal, stdout, stderr };
    } finally {
      clearTimeout(timer);
    }
  }

  end(): void {
    this.client.end();
  }
}
