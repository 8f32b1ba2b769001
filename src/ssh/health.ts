// A host's health: a cheap SSH command (`true`) over a fresh connection on an interval. A failed
// check takes the host offline at once (its workers stop polling); a passing one brings it back.
import { SshConnection, type SshTarget } from './connection';

export interface HealthState {
  online: boolean;
  /** Since when `online` has had its value. */
  since: string;
  checkedAt?: string;
  error?: string;
}

export interface HostHealthOptions {
  target: SshTarget;
  intervalMs: number;
  /** Called with every change of `online` (and the first result). */
  onChange(state: HealthState): void;
}

export class HostHealth {
  private current: HealthState = { online: false, since: new Date().toISOString(), error: 'not checked yet' };
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private again = false;
  private stopped = false;
  private reported = false;

  constructor(private readonly options: HostHealthOptions) {}

  get state(): HealthState {
    return this.current;
  }

  start(): void {
    this.stopped = false;
    this.checkNow();
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** Checks now (or right after the check under way). */
  checkNow(): Promise<void> {
    if (this.running) {
      this.again = true;
      return this.running;
    }
    if (this.timer) clearTimeout(this.timer);
    this.running = this.check().finally(() => {
      this.running = undefined;
      if (this.stopped) return;
      if (this.again) {
        this.again = false;
        void this.checkNow();
      } else {
        this.timer = setTimeout(() => void this.checkNow(), this.options.intervalMs);
        this.timer.unref();
      }
    });
    return this.running;
  }

  /** Something else found the host unreachable (a run could not connect): offline now, check soon. */
  reportFailure(error: Error): void {
    this.set(false, error.message);
    void this.checkNow();
  }

  private async check(): Promise<void> {
    // As long as a connection may take: a slow login shell is not a dead host.
    const timeoutMs = Math.max(1_000, this.options.target.connectTimeoutMs);
    let connection: SshConnection | undefined;
    try {
      connection = await SshConnection.connect(this.options.target);
      const result = await connection.run('true', timeoutMs);
      if (result.code !== 0) throw new Error(`health check command exited with ${result.code ?? result.signal}: ${result.stderr.trim()}`);
      this.set(true);
    } catch (error) {
      this.set(false, (error as Error).message);
    } finally {
      connection?.end();
    }
  }

  private set(online: boolean, error?: string): void {
    const now = new Date().toISOString();
    const changed = online !== this.current.online || !this.reported;
    this.current = { online, since: changed ? now : this.current.since, checkedAt: now, ...(error ? { error } : {}) };
    if (changed) {
      this.reported = true;
      this.options.onChange(this.current);
    }
  }
}
