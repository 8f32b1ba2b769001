// The pull-agent side of Drover's HTTP protocol (see src/api/tasks-agents.ts): dequeue, heartbeat,
// complete, fail, release, and the earlier session of a task's session key.
import type { TaskCheckout } from '../model';

export interface Grant {
  task_id: string;
  /** Absent from servers older than workspaces. */
  run_id?: string;
  attempt: number;
  lease_expires_at: string | null;
  lease_ms: number;
  agent_type: string;
  kind: string;
  repo: string;
  number: number;
  title: string;
  prompt: string;
  url: string | null;
  session_key: string | null;
  checkout?: TaskCheckout | null;
}

export interface HeartbeatAnswer {
  lease_expires_at: string;
  lease_ms_left: number;
  cancel_requested: boolean;
}

export interface EarlierSessionAnswer {
  session_id: string;
  task_id: string;
  holder: { kind: 'host' | 'agent'; id: string } | null;
}

/** The server answered with an error. */
export class HttpError extends Error {
  override readonly name = 'HttpError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message);
  }

  /** The server refused for good: this agent no longer holds the task (or it is gone). */
  get leaseLost(): boolean {
    return this.status === 409 || this.status === 404;
  }

  /** The request may succeed later (server restarting or overloaded). */
  get transient(): boolean {
    return this.status >= 500 || this.status === 429 || this.status === 408;
  }
}

/** The server could not be reached (refused, reset, timed out). */
export class NetworkError extends Error {
  override readonly name = 'NetworkError';
  readonly transient = true;
}

export function isTransient(error: unknown): boolean {
  return error instanceof NetworkError || (error instanceof HttpError && error.transient);
}

export interface ResultReport {
  outcome: 'success' | 'fork';
  summary: string;
  branch?: string;
  rev?: string;
  details?: Record<string, unknown>;
}

export class DroverHttpClient {
  private readonly base: string;

  constructor(
    server: string,
    private readonly token: string,
    readonly agentId: string,
    private readonly requestTimeoutMs = 30_000,
  ) {
    this.base = server.replace(/\/+$/, '');
  }

  private async request<T>(method: string, path: string, options: { body?: unknown; signal?: AbortSignal; timeoutMs?: number } = {}): Promise<{ status: number; body: T | undefined }> {
    const signals = [AbortSignal.timeout(options.timeoutMs ?? this.requestTimeoutMs)];
    if (options.signal) signals.push(options.signal);
    let response: Response;
    try {
      response = await fetch(`${this.base}${path}`, {
        method,
        headers: {
          authorization: `Bearer ${this.token}`,
          accept: 'application/json',
          ...(options.body !== undefined ? { 'content-type': 'application/json' } : {}),
        },
        body: options.body !== undefined ? JSON.stringify(options.body) : undefined,
        signal: AbortSignal.any(signals),
      });
    } catch (error) {
      if (options.signal?.aborted) throw options.signal.reason ?? error;
      const cause = (error as { cause?: { code?: string; message?: string } }).cause;
      throw new NetworkError(`${method} ${path}: ${cause?.code ?? cause?.message ?? (error as Error).message}`);
    }
    const text = await response.text().catch(() => '');
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = undefined;
    }
    if (response.status >= 400) {
      const err = (body ?? {}) as { code?: string; message?: string };
      throw new HttpError(response.status, err.code ?? `http_${response.status}`, `${method} ${path}: ${response.status} ${err.message ?? text.slice(0, 200)}`);
    }
    return { status: response.status, body: body as T | undefined };
  }

  private taskPath(taskId: string, action: string): string {
    return `/api/v1/tasks/${encodeURIComponent(taskId)}/${action}`;
  }

  /** Long-polls for a task; undefined when none came within `waitSeconds`. */
  async dequeue(waitSeconds: number, signal?: AbortSignal): Promise<Grant | undefined> {
    const query = new URLSearchParams({ agent_id: this.agentId, wait: String(waitSeconds) });
    const { status, body } = await this.request<Grant>('GET', `/api/v1/tasks/dequeue?${query}`, { signal, timeoutMs: waitSeconds * 1000 + this.requestTimeoutMs });
    return status === 200 && body ? body : undefined;
  }

  async heartbeat(taskId: string, attempt: number, output?: string): Promise<HeartbeatAnswer> {
    const { body } = await this.request<HeartbeatAnswer>('POST', this.taskPath(taskId, 'heartbeat'), { body: { agent_id: this.agentId, attempt, ...(output ? { output } : {}) } });
    return body!;
  }

  async complete(taskId: string, attempt: number, result: ResultReport, output?: string): Promise<void> {
    await this.request('POST', this.taskPath(taskId, 'complete'), { body: { agent_id: this.agentId, attempt, ...result, ...(output ? { output } : {}) } });
  }

  async fail(taskId: string, attempt: number, summary: string, details?: Record<string, unknown>, output?: string): Promise<void> {
    await this.request('POST', this.taskPath(taskId, 'fail'), { body: { agent_id: this.agentId, attempt, summary, ...(details ? { details } : {}), ...(output ? { output } : {}) } });
  }

  async release(taskId: string, attempt: number, timeoutMs?: number): Promise<void> {
    await this.request('POST', this.taskPath(taskId, 'release'), { body: { agent_id: this.agentId, attempt }, ...(timeoutMs !== undefined ? { timeoutMs } : {}) });
  }

  /** The earlier session of the task's session key, if any. */
  async earlierSession(taskId: string): Promise<EarlierSessionAnswer | undefined> {
    const query = new URLSearchParams({ agent_id: this.agentId });
    const { body } = await this.request<{ earlier: EarlierSessionAnswer | null }>('GET', `${this.taskPath(taskId, 'session')}?${query}`);
    return body?.earlier ?? undefined;
  }
}
