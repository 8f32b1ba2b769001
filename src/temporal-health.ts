// What Drover's calls to Temporal meet: throttling (RESOURCE_EXHAUSTED), outages (UNAVAILABLE, no
// connection) and answers. The API's client feeds a TemporalCallObserver through a gRPC interceptor
// (connectClient installs it); the observer logs each kind of trouble once, rate-limited, and
// /readyz and /metrics read it. The workers' Rust core logs its own retries through the SDK
// Runtime's logger: TemporalRuntimeLog forwards those to pino, rate-limited too.
import { AsyncLocalStorage } from 'node:async_hooks';
// The client's own copy (one version in the lockfile): a status's metadata must be its Metadata.
import { Metadata } from '@grpc/grpc-js';
import type { ConnectionOptions } from '@temporalio/client';
import type { LogLevel, LogMetadata, Logger as SdkLogger } from '@temporalio/common';

/** gRPC status codes Drover tells apart (@grpc/grpc-js `status`). */
export const GrpcCode = { CANCELLED: 1, UNKNOWN: 2, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, RESOURCE_EXHAUSTED: 8, INTERNAL: 13, UNAVAILABLE: 14 } as const;

/** One warning per method (or core message) per this interval; what comes between is counted into the next. */
export const LOG_INTERVAL_MS = 10_000;
/**
 * While Temporal is unreachable, how often the observer's probe asks whether it is back (a call
 * to a server that is down costs it nothing): its return is seen within this, and the workers
 * renewed (RenewableWorkers).
 */
export const PROBE_INTERVAL_MS = 500;

/**
 * The frontend RPCs that Temporal rate-limits with the namespace's visibility limit
 * (`VisibilityAPIToPriority` in the server's service/frontend/configs/quotas.go).
 */
export const VISIBILITY_METHODS: ReadonlySet<string> = new Set([
  'ListWorkflowExecutions',
  'CountWorkflowExecutions',
  'ScanWorkflowExecutions',
  'ListOpenWorkflowExecutions',
  'ListClosedWorkflowExecutions',
  'ListArchivedWorkflowExecutions',
]);

/** Where a log line goes: a pino logger fits. */
export interface HealthLog {
  warn(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
}

export type CallOutcome = 'answered' | 'throttled' | 'unavailable' | 'other';

/**
 * What one call's final gRPC status says of the server. Any answer from the server (OK, NOT_FOUND,
 * a rejected Update…) shows it reachable, a throttled one too; UNAVAILABLE, or a deadline that
 * passed before any connection was there, shows it unreachable; cancellations and other deadlines
 * say nothing (long-polls end that way).
 */
export function classifyStatus(code: number, details = ''): CallOutcome {
  switch (code) {
    case GrpcCode.RESOURCE_EXHAUSTED:
      return 'throttled';
    case GrpcCode.UNAVAILABLE:
      return 'unavailable';
    case GrpcCode.DEADLINE_EXCEEDED:
      // grpc-js says where the call was when the deadline passed: still waiting for a connection?
      return /waiting for LB pick|waiting for name resolution/i.test(details) ? 'unavailable' : 'other';
    case GrpcCode.CANCELLED:
    case GrpcCode.UNKNOWN:
    case GrpcCode.INTERNAL:
      return 'other';
    default:
      return 'answered';
  }
}

/** `/temporal.api.workflowservice.v1.WorkflowService/ListWorkflowExecutions` → `ListWorkflowExecutions`. */
export function methodName(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1) || path;
}

/** The likely cause of a throttled call, and the server's dynamic-config setting that governs it. */
export function throttleCause(method: string, details = ''): { cause: string; setting: string } {
  if (VISIBILITY_METHODS.has(method)) {
    return { cause: "the namespace's visibility rate limit (10 calls a second by default on a server, 100 on the dev server)", setting: 'frontend.namespaceRPS.visibility' };
  }
  if (/service rate limit|host rate limit/i.test(details)) return { cause: "the frontend host's rate limit", setting: 'frontend.rps' };
  return { cause: "the namespace's rate limit", setting: 'frontend.namespaceRPS (or frontend.globalNamespaceRPS)' };
}

/**
 * At most one log line per key and interval: the first at once, and what comes later in the
 * interval counted into one more line at its end.
 */
export class LogWindow {
  private readonly keys = new Map<string, { lastAt: number; pending: number; timer?: NodeJS.Timeout; write: (count: number) => void }>();

  constructor(
    private readonly intervalMs = LOG_INTERVAL_MS,
    private readonly now: () => number = Date.now,
  ) {}

  /** One more occurrence of `key`; `write(count)` logs `count` occurrences when a line is due. */
  hit(key: string, write: (count: number) => void): void {
    const entry = this.keys.get(key) ?? { lastAt: -Infinity, pending: 0, write };
    this.keys.set(key, entry);
    entry.pending++;
    entry.write = write;
    const wait = entry.lastAt + this.intervalMs - this.now();
    if (wait <= 0) this.flush(key);
    else entry.timer ??= setTimeout(() => this.flush(key), wait).unref();
  }

  private flush(key: string): void {
    const entry = this.keys.get(key);
    if (!entry) return;
    clearTimeout(entry.timer);
    entry.timer = undefined;
    if (entry.pending === 0) return;
    const count = entry.pending;
    entry.pending = 0;
    entry.lastAt = this.now();
    entry.write(count);
  }

  /** Writes what is pending and stops the timers. */
  close(): void {
    for (const key of this.keys.keys()) this.flush(key);
  }
}

export type Reachability = 'unknown' | 'reachable' | 'unreachable';

export interface TemporalHealthState {
  status: Reachability;
  /** Since when (ms since the epoch) the status holds; undefined while unknown. */
  since?: number;
  /** The failure that made Temporal unreachable (while unreachable). */
  lastError?: string;
}

type Interceptor = NonNullable<ConnectionOptions['interceptors']>[number];
type InterceptingCallInterface = Pick<
  ReturnType<Interceptor>,
  'start' | 'sendMessageWithContext' | 'sendMessage' | 'startRead' | 'halfClose' | 'cancelWithStatus' | 'getPeer' | 'getAuthContext'
>;

/**
 * What the API's Temporal client sees of the server, call by call: counts throttled and
 * unavailable calls by method, keeps whether Temporal is reachable (and since when), counts
 * reconnects, and logs throttling (once per method per 10 s) and each outage (once when it begins,
 * once when it ends). Fed by `interceptor()`, or by `record` directly.
 */
export class TemporalCallObserver {
  private status: Reachability = 'unknown';
  private since: number | undefined;
  private lastError: string | undefined;
  private readonly throttledCounts = new Map<string, number>();
  private readonly unavailableCounts = new Map<string, number>();
  private reconnectCount = 0;
  private readonly throttleLog: LogWindow;
  private probe: (() => Promise<unknown>) | undefined;
  private probeTimer: NodeJS.Timeout | undefined;
  private probing = false;
  private stopped = false;
  private idleTimer: NodeJS.Timeout | undefined;
  private lastCallAt = -Infinity;
  private readonly now: () => number;
  private readonly reachableAgainListeners = new Set<(event: { outageMs: number }) => void>();
  /** Runs a function in the async context the observer was made in, outside any call's. */
  private readonly outsideCalls = AsyncLocalStorage.snapshot();

  constructor(
    private readonly options: {
      /** Where Temporal is (for the logs). */
      target?: string;
      log?: HealthLog;
      now?: () => number;
      logIntervalMs?: number;
      probeIntervalMs?: number;
      /**
       * Also probe while reachable, when no call was seen for this long: a process that calls
       * Temporal only now and then (the worker: its pollers are the Rust core's, unseen here)
       * then notices an outage, and its end, in its logs. None when omitted.
       */
      idleProbeIntervalMs?: number;
    } = {},
  ) {
    this.now = options.now ?? Date.now;
    this.throttleLog = new LogWindow(options.logIntervalMs ?? LOG_INTERVAL_MS, this.now);
  }

  /** One call's final status (an attempt's, when the client retries: each attempt is a call here). */
  record(method: string, code: number, details = ''): CallOutcome {
    this.lastCallAt = this.now();
    const outcome = classifyStatus(code, details);
    if (outcome === 'throttled') this.throttled(method, details);
    else if (outcome === 'unavailable') this.unavailable(method, `${code === GrpcCode.UNAVAILABLE ? 'UNAVAILABLE' : 'DEADLINE_EXCEEDED'}: ${details}`);
    else if (outcome === 'answered') this.answered();
    return outcome;
  }

  /** The server answered: it is reachable. */
  answered(): void {
    if (this.status === 'reachable') return;
    const was = this.status;
    const outageMs = this.since === undefined ? 0 : this.now() - this.since;
    this.setStatus('reachable');
    if (was !== 'unreachable') return;
    this.reconnectCount++;
    this.options.log?.info(
      { temporal: this.options.target, outageSeconds: Math.round(outageMs / 100) / 10 },
      `Temporal is reachable again after ${(outageMs / 1000).toFixed(1)} s`,
    );
    // Not in the context of the call that was answered (a probe's has a deadline a second away):
    // work a listener starts, such as renewed workers, would inherit it.
    for (const listener of this.reachableAgainListeners) this.outsideCalls(listener, { outageMs });
  }

  /** Calls `listener` each time Temporal answers again after being unreachable, with how long it was. Returns its removal. */
  onReachableAgain(listener: (event: { outageMs: number }) => void): () => void {
    this.reachableAgainListeners.add(listener);
    return () => this.reachableAgainListeners.delete(listener);
  }

  /** RESOURCE_EXHAUSTED: the server refused the call for now (the client retries it with backoff). */
  throttled(method: string, details = ''): void {
    this.throttledCounts.set(method, (this.throttledCounts.get(method) ?? 0) + 1);
    this.answered(); // a server that throttles is up
    const { cause, setting } = throttleCause(method, details);
    this.throttleLog.hit(method, (count) =>
      this.options.log?.warn(
        { temporal: this.options.target, method, throttled: count, setting, error: details || undefined },
        `Temporal is throttling Drover's ${method} calls (RESOURCE_EXHAUSTED, ${count} since the last such warning; the client retries them ` +
          `with backoff, up to 10 attempts): most likely ${cause}. Raise ${setting} in the server's dynamic config, or lower Drover's load on it`,
      ),
    );
  }

  /** UNAVAILABLE, or no connection: Temporal is unreachable from here (until a call is answered). */
  unavailable(method: string, error: string): void {
    this.unavailableCounts.set(method, (this.unavailableCounts.get(method) ?? 0) + 1);
    if (this.status === 'unreachable') return;
    this.setStatus('unreachable');
    this.lastError = error;
    this.options.log?.warn(
      { temporal: this.options.target, method, error },
      "Temporal is unreachable: Drover's calls to it are retried (an API's /readyz answers 503 until it is back)",
    );
    this.scheduleProbe();
  }

  state(): TemporalHealthState {
    return { status: this.status, since: this.since, lastError: this.status === 'unreachable' ? this.lastError : undefined };
  }

  /** Calls refused with RESOURCE_EXHAUSTED, by method, since the start. */
  throttledByMethod(): ReadonlyMap<string, number> {
    return this.throttledCounts;
  }

  /** Calls that found Temporal unavailable, by method, since the start. */
  unavailableByMethod(): ReadonlyMap<string, number> {
    return this.unavailableCounts;
  }

  /** Times Temporal became reachable again after being unreachable. */
  get reconnects(): number {
    return this.reconnectCount;
  }

  /**
   * While Temporal is unreachable, `probe` (a cheap call through the observed client) runs every
   * second, so that the state turns back to reachable when the server is back even if nothing
   * else calls it (readiness would otherwise stay 503 for good).
   */
  watch(probe: () => Promise<unknown>): void {
    this.probe = probe;
    this.stopped = false;
    if (this.status === 'unreachable') this.scheduleProbe();
    const idleMs = this.options.idleProbeIntervalMs;
    if (idleMs && !this.idleTimer) {
      this.idleTimer = setInterval(() => {
        if (this.status !== 'unreachable' && this.now() - this.lastCallAt >= idleMs) this.runProbe();
      }, idleMs).unref();
    }
  }

  /** Stops probing and writes pending throttling warnings (the connection is closing). */
  stop(): void {
    this.stopped = true;
    clearTimeout(this.probeTimer);
    this.probeTimer = undefined;
    clearInterval(this.idleTimer);
    this.idleTimer = undefined;
    this.throttleLog.close();
  }

  /**
   * The gRPC client interceptor that feeds this observer; goes after the SDK's retry interceptor,
   * so that it sees every attempt (`[makeGrpcRetryInterceptor(...), observer.interceptor()]`).
   */
  interceptor(): Interceptor {
    return (options, nextCall) => {
      const method = methodName(options.method_definition.path);
      let call: InterceptingCallInterface;
      try {
        call = nextCall(options);
      } catch (error) {
        // The connection was closed while the SDK's retry waited to try again: its timer would
        // throw (an uncaught exception) and the call never settle. It ends, cancelled, instead.
        return closedCall(error) as ReturnType<Interceptor>;
      }
      // A plain call that delegates to the next one, watching the status on its way back: grpc-js
      // needs only the InterceptingCallInterface (the type names its class), and a copy of
      // @grpc/grpc-js of our own could differ from the client's.
      const observed: InterceptingCallInterface = {
        start: (metadata, listener) =>
          call.start(metadata, {
            onReceiveMetadata: (received) => listener?.onReceiveMetadata?.(received),
            onReceiveMessage: (message) => listener?.onReceiveMessage?.(message),
            onReceiveStatus: (status) => {
              try {
                this.record(method, status.code, status.details);
              } finally {
                listener?.onReceiveStatus?.(status);
              }
            },
          }),
        sendMessageWithContext: (context, message) => call.sendMessageWithContext(context, message),
        sendMessage: (message) => call.sendMessage(message),
        startRead: () => call.startRead(),
        halfClose: () => call.halfClose(),
        cancelWithStatus: (status, details) => call.cancelWithStatus(status, details),
        getPeer: () => call.getPeer(),
        getAuthContext: () => call.getAuthContext(),
      };
      return observed as ReturnType<Interceptor>;
    };
  }

  private setStatus(status: Reachability): void {
    this.status = status;
    this.since = this.now();
    if (status !== 'unreachable') this.lastError = undefined;
  }

  private scheduleProbe(): void {
    if (!this.probe || this.stopped || this.probeTimer || this.status !== 'unreachable') return;
    this.probeTimer = setTimeout(() => {
      this.probeTimer = undefined;
      if (this.status === 'unreachable') this.runProbe();
    }, this.options.probeIntervalMs ?? PROBE_INTERVAL_MS).unref();
  }

  private runProbe(): void {
    if (!this.probe || this.probing || this.stopped) return;
    this.probing = true;
    // Its outcome reaches the observer through the interceptor; its error is that outcome.
    void this.probe()
      .catch(() => undefined)
      .finally(() => {
        this.probing = false;
        this.scheduleProbe();
      });
  }
}

/** `retried 6 times`, `127.0.0.1:7233`: numbers vary from one warning of a kind to the next. */
function messageKind(message: string): string {
  return message.replace(/\d+/g, 'N');
}

/** Core's error field: `Status { code: Unavailable, message: "tcp connect error", … Connection refused … }`. */
function coreError(error: unknown): { code?: string; summary?: string } {
  if (typeof error !== 'string') return {};
  const code = /code: (\w+)/.exec(error)?.[1];
  const message = /message: "([^"]*)"/.exec(error)?.[1];
  const os = /message: "([^"]*)" \}\)/.exec(error)?.[1] ?? /kind: (\w+)/.exec(error)?.[1];
  return { code, summary: [message, os].filter(Boolean).join(': ') || undefined };
}

/** What core's warning means, in words an operator can act on. */
export function describeCoreWarning(message: string, fields: Record<string, unknown>): string {
  const retried = /^gRPC call (\w+) retried (\d+) times?/.exec(message);
  if (!retried) return `Temporal worker: ${message}`;
  const { code, summary } = coreError(fields.error);
  const what = `the worker's ${retried[1]} calls to Temporal keep failing (${[code, summary].filter(Boolean).join(': ') || 'see error'}); the worker retries them`;
  if (code === 'Unavailable') return `Temporal is unreachable: ${what}, and picks up work again once the server is back`;
  if (code === 'ResourceExhausted') return `Temporal is throttling the worker: ${what} (see the server's frontend.namespaceRPS)`;
  return `Temporal worker: ${what}`;
}

/** A pino-like logger with the levels the SDK uses. */
export interface LevelLog {
  trace(fields: Record<string, unknown>, message: string): void;
  debug(fields: Record<string, unknown>, message: string): void;
  info(fields: Record<string, unknown>, message: string): void;
  warn(fields: Record<string, unknown>, message: string): void;
  error(fields: Record<string, unknown>, message: string): void;
}

const LEVELS: Record<LogLevel, keyof LevelLog> = { TRACE: 'trace', DEBUG: 'debug', INFO: 'info', WARN: 'warn', ERROR: 'error' };

/** SDK warnings about what Drover means to do (the API's pull-queue workers serve activities only). */
const EXPECTED = new Set(['No workflows registered, not polling for workflow tasks']);

/**
 * The SDK Runtime's logger (`Runtime.install({ logger })`): the workers', activities' and
 * workflows' logs go to pino at their own level; the Rust core's warnings (a poll retried while the
 * server is down: one per poller every few seconds) are explained and rate-limited, one line per
 * kind per 10 s with the count.
 */
export class TemporalRuntimeLog implements SdkLogger {
  private readonly window: LogWindow;

  constructor(
    private readonly out: LevelLog,
    options: { intervalMs?: number; now?: () => number } = {},
  ) {
    this.window = new LogWindow(options.intervalMs ?? LOG_INTERVAL_MS, options.now);
  }

  log(level: LogLevel, message: string, meta?: LogMetadata): void {
    const fields: Record<string, unknown> = {};
    // Symbol keys (the SDK's LogTimestamp) are left out; bigints would not serialise, nor would an
    // Error's message and stack (an activity's failure comes as `error`).
    for (const [key, value] of Object.entries(meta ?? {})) {
      fields[key] = typeof value === 'bigint' ? String(value) : value instanceof Error ? { type: value.name, message: value.message, stack: value.stack } : value;
    }
    const method = EXPECTED.has(message) ? 'debug' : (LEVELS[level] ?? 'info');
    if (fields.sdkComponent === 'core' && (level === 'WARN' || level === 'ERROR')) {
      this.window.hit(`${level} ${messageKind(message)}`, (count) =>
        this.out[method](
          { ...fields, repeated: count, coreMessage: message },
          count === 1 ? describeCoreWarning(message, fields) : `${describeCoreWarning(message, fields)} (${count} such warnings since the last)`,
        ),
      );
      return;
    }
    this.out[method](fields, message);
  }

  trace(message: string, meta?: LogMetadata): void {
    this.log('TRACE', message, meta);
  }
  debug(message: string, meta?: LogMetadata): void {
    this.log('DEBUG', message, meta);
  }
  info(message: string, meta?: LogMetadata): void {
    this.log('INFO', message, meta);
  }
  warn(message: string, meta?: LogMetadata): void {
    this.log('WARN', message, meta);
  }
  error(message: string, meta?: LogMetadata): void {
    this.log('ERROR', message, meta);
  }

  /** Writes pending warnings. */
  close(): void {
    this.window.close();
  }
}

/** A call that cannot be made (its channel is shut down): it ends at once, cancelled, not retried. */
function closedCall(error: unknown): InterceptingCallInterface {
  const details = `the connection is closed: ${error instanceof Error ? error.message : String(error)}`;
  let ended = false;
  const end = (listener: Parameters<InterceptingCallInterface['start']>[1]) => {
    if (ended) return;
    ended = true;
    listener?.onReceiveStatus?.({ code: GrpcCode.CANCELLED, details, metadata: new Metadata() });
  };
  return {
    start: (_metadata, listener) => end(listener),
    sendMessageWithContext: () => undefined,
    sendMessage: () => undefined,
    startRead: () => undefined,
    halfClose: () => undefined,
    cancelWithStatus: () => undefined,
    getPeer: () => '',
    getAuthContext: () => null,
  };
}
