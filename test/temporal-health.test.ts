// What Drover's Temporal client meets, in its logs, metrics and readiness: the observer's state
// logic (unit), and a dev server of this file's own (on disk, restartable, with a visibility rate
// limit of 1 call a second) that throttles a burst of count calls, then goes down and comes back.
import { AsyncLocalStorage } from 'node:async_hooks';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Connection } from '@temporalio/client';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { NativeConnection, Runtime, Worker } from '@temporalio/worker';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, inject, test, vi } from 'vitest';
import { buildApp } from '../src/api/app';
import { ApiMetrics } from '../src/api/metrics';
import { startDevServer } from '../src/dev-server';
import { connectClient } from '../src/temporal-connection';
import {
  classifyStatus,
  describeCoreWarning,
  GrpcCode,
  LogWindow,
  methodName,
  PROBE_INTERVAL_MS,
  TemporalCallObserver,
  TemporalRuntimeLog,
  type HealthLog,
  type LevelLog,
} from '../src/temporal-health';
import { testConfig } from './support/http';
import { freePort } from './support/process';
import { TcpProxy } from './support/tcp-proxy';
import { waitFor } from './support/temporal';

const OK = 0;
const NOT_FOUND = 5;
const LIST = 'ListWorkflowExecutions';

function stubLog() {
  const lines: Array<{ level: string; fields: Record<string, unknown>; message: string }> = [];
  const at =
    (level: string) =>
    (fields: Record<string, unknown>, message: string): void => {
      lines.push({ level, fields, message });
    };
  const log: HealthLog & LevelLog = { trace: at('trace'), debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
  return { log, lines };
}

describe('the observer', () => {
  afterEach(() => {
    vi.useRealTimers();
  });

  test('statuses: answers, throttling, outages, and what says nothing', () => {
    expect(classifyStatus(OK)).toBe('answered');
    expect(classifyStatus(NOT_FOUND)).toBe('answered'); // the server answered
    expect(classifyStatus(GrpcCode.RESOURCE_EXHAUSTED, 'namespace rate limit exceeded')).toBe('throttled');
    expect(classifyStatus(GrpcCode.UNAVAILABLE, 'No connection established')).toBe('unavailable');
    expect(classifyStatus(GrpcCode.DEADLINE_EXCEEDED, 'Deadline exceeded after 3.001s,Waiting for LB pick')).toBe('unavailable');
    expect(classifyStatus(GrpcCode.DEADLINE_EXCEEDED, 'Deadline exceeded after 60.0s,LB pick: 0.001s,remote_addr=127.0.0.1:7233')).toBe('other');
    expect(classifyStatus(GrpcCode.CANCELLED, 'Cancelled on client')).toBe('other');
    expect(methodName('/temporal.api.workflowservice.v1.WorkflowService/CountWorkflowExecutions')).toBe('CountWorkflowExecutions');
  });

  test('knows nothing at first; an answer makes Temporal reachable, silently', () => {
    const { log, lines } = stubLog();
    const observer = new TemporalCallObserver({ log, now: () => 1_000 });
    expect(observer.state()).toEqual({ status: 'unknown', since: undefined, lastError: undefined });
    observer.record('GetSystemInfo', OK);
    expect(observer.state()).toMatchObject({ status: 'reachable', since: 1_000 });
    expect(observer.reconnects).toBe(0);
    expect(lines).toEqual([]);
  });

  test('an outage: unreachable since its first failure, logged once; back on the next answer, with its duration and one reconnect', () => {
    const { log, lines } = stubLog();
    let now = 10_000;
    const observer = new TemporalCallObserver({ log, now: () => now, target: 'temporal:7233' });
    let reachableAgain = 0;
    const stopListening = observer.onReachableAgain(() => reachableAgain++);
    observer.record('GetSystemInfo', OK);
    expect(reachableAgain).toBe(0); // the first answer is no return
    now = 20_000;
    observer.record(LIST, GrpcCode.UNAVAILABLE, 'No connection established. Last error: connect ECONNREFUSED');
    now = 25_000;
    observer.record(LIST, GrpcCode.UNAVAILABLE, 'No connection established');
    observer.record('GetSystemInfo', GrpcCode.UNAVAILABLE, 'No connection established');
    observer.record('PollActivityTaskQueue', GrpcCode.CANCELLED, 'Cancelled on client'); // says nothing
    expect(observer.state()).toEqual({
      status: 'unreachable',
      since: 20_000,
      lastError: 'UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED',
    });
    expect(Object.fromEntries(observer.unavailableByMethod())).toEqual({ [LIST]: 2, GetSystemInfo: 1 });
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ level: 'warn', fields: { temporal: 'temporal:7233', method: LIST } });
    expect(lines[0]!.message).toMatch(/^Temporal is unreachable/);

    now = 65_500;
    // Heard inside the answered call's context (a probe's carries a deadline): listeners run outside it.
    const callContext = new AsyncLocalStorage<string>();
    let listenerContext: string | undefined = 'unset';
    observer.onReachableAgain(() => (listenerContext = callContext.getStore()));
    callContext.run('the probe, with its deadline', () => observer.record('GetSystemInfo', OK));
    expect(listenerContext).toBeUndefined();
    observer.record(LIST, OK);
    expect(observer.state()).toEqual({ status: 'reachable', since: 65_500, lastError: undefined });
    expect(observer.reconnects).toBe(1);
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatchObject({ level: 'info', fields: { outageSeconds: 45.5 }, message: 'Temporal is reachable again after 45.5 s' });
    expect(reachableAgain).toBe(1); // once per return, not per answer (the workers are renewed once)

    stopListening();
    observer.record(LIST, GrpcCode.UNAVAILABLE, 'No connection established');
    observer.record(LIST, OK);
    expect(observer.reconnects).toBe(2);
    expect(reachableAgain).toBe(1);
  });

  test('throttling: counted by method, one warning per method per 10 s with the count since the last, naming the setting', () => {
    vi.useFakeTimers({ now: 0 });
    const { log, lines } = stubLog();
    const observer = new TemporalCallObserver({ log });
    for (let i = 0; i < 5; i++) observer.record(LIST, GrpcCode.RESOURCE_EXHAUSTED, 'namespace rate limit exceeded');
    observer.record('StartWorkflowExecution', GrpcCode.RESOURCE_EXHAUSTED, 'namespace rate limit exceeded');
    expect(Object.fromEntries(observer.throttledByMethod())).toEqual({ [LIST]: 5, StartWorkflowExecution: 1 });
    expect(observer.state().status).toBe('reachable'); // a server that throttles is up
    // The first of each method at once.
    expect(lines.map((l) => [l.level, l.fields.method, l.fields.throttled, l.fields.setting])).toEqual([
      ['warn', LIST, 1, 'frontend.namespaceRPS.visibility'],
      ['warn', 'StartWorkflowExecution', 1, 'frontend.namespaceRPS (or frontend.globalNamespaceRPS)'],
    ]);
    expect(lines[0]!.message).toContain("namespace's visibility rate limit");
    expect(lines[0]!.fields.error).toBe('namespace rate limit exceeded');

    vi.advanceTimersByTime(9_999);
    observer.record(LIST, GrpcCode.RESOURCE_EXHAUSTED);
    expect(lines).toHaveLength(2);
    vi.advanceTimersByTime(1); // the window ends: the rest, counted
    expect(lines).toHaveLength(3);
    expect(lines[2]!.fields).toMatchObject({ method: LIST, throttled: 5 });
    expect(lines[2]!.message).toContain('5 since the last such warning');
    vi.advanceTimersByTime(60_000);
    expect(lines).toHaveLength(3); // nothing more to say

    observer.record(LIST, GrpcCode.RESOURCE_EXHAUSTED); // a new window: at once
    expect(lines).toHaveLength(4);
    expect(Object.fromEntries(observer.throttledByMethod())).toEqual({ [LIST]: 7, StartWorkflowExecution: 1 });
    observer.stop();
  });

  test('while unreachable, a probe runs every PROBE_INTERVAL_MS until an answer comes back', async () => {
    vi.useFakeTimers({ now: 0 });
    const observer = new TemporalCallObserver();
    let serverUp = false;
    const probe = vi.fn(async () => {
      // As through the interceptor: the probe's own status feeds the observer.
      observer.record('GetSystemInfo', serverUp ? OK : GrpcCode.UNAVAILABLE, serverUp ? '' : 'No connection established');
      if (!serverUp) throw new Error('14 UNAVAILABLE');
    });
    observer.watch(probe);
    observer.record('GetSystemInfo', OK);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(probe).not.toHaveBeenCalled(); // nothing to probe while reachable

    observer.record(LIST, GrpcCode.UNAVAILABLE, 'No connection established');
    await vi.advanceTimersByTimeAsync(3 * PROBE_INTERVAL_MS);
    expect(probe).toHaveBeenCalledTimes(3);
    serverUp = true;
    await vi.advanceTimersByTimeAsync(PROBE_INTERVAL_MS);
    expect(probe).toHaveBeenCalledTimes(4);
    expect(observer.state().status).toBe('reachable');
    expect(observer.reconnects).toBe(1);
    await vi.advanceTimersByTimeAsync(5_000);
    expect(probe).toHaveBeenCalledTimes(4);

    observer.record(LIST, GrpcCode.UNAVAILABLE, 'No connection established');
    observer.stop(); // the connection is closing: no more probes
    await vi.advanceTimersByTimeAsync(5_000);
    expect(probe).toHaveBeenCalledTimes(4);
  });

  test('with an idle probe: a process that seldom calls notices an outage and its end, and a busy one is not probed', async () => {
    vi.useFakeTimers({ now: 0 });
    const lines: string[] = [];
    const log = { warn: (_: object, message: string) => lines.push(message), info: (_: object, message: string) => lines.push(message) };
    const observer = new TemporalCallObserver({ log, idleProbeIntervalMs: 5_000 });
    let serverUp = true;
    const probe = vi.fn(async () => {
      observer.record('GetSystemInfo', serverUp ? OK : GrpcCode.UNAVAILABLE, serverUp ? '' : 'No connection established');
      if (!serverUp) throw new Error('14 UNAVAILABLE');
    });
    observer.watch(probe);
    // Calls every 2 s keep it busy: no probe.
    for (let i = 0; i < 5; i++) {
      observer.record(LIST, OK);
      await vi.advanceTimersByTimeAsync(2_000);
    }
    expect(probe).not.toHaveBeenCalled();
    // Idle: a probe every 5 s, silent while answered.
    await vi.advanceTimersByTimeAsync(10_000);
    expect(probe).toHaveBeenCalledTimes(2);
    expect(lines).toEqual([]);
    // The server goes away: the next idle probe finds it, then probes come every PROBE_INTERVAL_MS until it is back.
    serverUp = false;
    await vi.advanceTimersByTimeAsync(5_000);
    expect(observer.state().status).toBe('unreachable');
    await vi.advanceTimersByTimeAsync(3 * PROBE_INTERVAL_MS);
    expect(probe).toHaveBeenCalledTimes(6);
    serverUp = true;
    await vi.advanceTimersByTimeAsync(PROBE_INTERVAL_MS);
    expect(observer.state().status).toBe('reachable');
    expect(lines).toHaveLength(2);
    expect(lines[0]).toMatch(/^Temporal is unreachable/);
    expect(lines[1]).toContain(`Temporal is reachable again after ${((4 * PROBE_INTERVAL_MS) / 1000).toFixed(1)} s`);
    observer.stop();
    await vi.advanceTimersByTimeAsync(20_000);
    expect(probe).toHaveBeenCalledTimes(7);
  });

  test('the interceptor passes every call through and records its status', () => {
    const observer = new TemporalCallObserver();
    const received: unknown[] = [];
    let listener: { onReceiveStatus?: (status: { code: number; details: string }) => void; onReceiveMessage?: (m: unknown) => void } | undefined;
    const next = {
      start: vi.fn((_metadata: unknown, l: typeof listener) => {
        listener = l;
      }),
      sendMessage: vi.fn(),
      sendMessageWithContext: vi.fn(),
      startRead: vi.fn(),
      halfClose: vi.fn(),
      cancelWithStatus: vi.fn(),
      getPeer: () => 'peer',
      getAuthContext: () => null,
    };
    const interceptor = observer.interceptor() as unknown as (
      options: unknown,
      nextCall: () => typeof next,
    ) => { start(m: unknown, l: object): void; sendMessage(m: unknown): void; halfClose(): void; getPeer(): string };
    const call = interceptor({ method_definition: { path: '/temporal.api.workflowservice.v1.WorkflowService/CountWorkflowExecutions' } }, () => next);
    call.start('metadata', {
      onReceiveMessage: (m: unknown) => received.push(m),
      onReceiveStatus: (s: unknown) => received.push(s),
    });
    call.sendMessage('request');
    call.halfClose();
    expect(next.sendMessage).toHaveBeenCalledWith('request');
    expect(next.halfClose).toHaveBeenCalled();
    expect(call.getPeer()).toBe('peer');
    listener!.onReceiveMessage!('response');
    listener!.onReceiveStatus!({ code: GrpcCode.RESOURCE_EXHAUSTED, details: 'namespace rate limit exceeded' });
    expect(received).toEqual(['response', { code: GrpcCode.RESOURCE_EXHAUSTED, details: 'namespace rate limit exceeded' }]);
    expect(observer.throttledByMethod().get('CountWorkflowExecutions')).toBe(1);
    observer.stop();
  });

  test('metrics read the observer at scrape time', async () => {
    const metrics = new ApiMetrics(async () => []);
    const observer = new TemporalCallObserver();
    metrics.observeTemporal(observer);
    observer.record('GetSystemInfo', OK);
    observer.record('CountWorkflowExecutions', GrpcCode.RESOURCE_EXHAUSTED);
    observer.record('CountWorkflowExecutions', GrpcCode.RESOURCE_EXHAUSTED);
    observer.record(LIST, GrpcCode.UNAVAILABLE, 'No connection established');
    let text = await metrics.registry.metrics();
    expect(text).toContain('drover_temporal_throttled_total{method="CountWorkflowExecutions"} 2');
    expect(text).toContain(`drover_temporal_unavailable_total{method="${LIST}"} 1`);
    expect(text).toMatch(/^drover_temporal_reachable 0$/m);
    expect(text).toMatch(/^drover_temporal_reconnects_total 0$/m);
    observer.record(LIST, OK);
    text = await metrics.registry.metrics();
    expect(text).toMatch(/^drover_temporal_reachable 1$/m);
    expect(text).toMatch(/^drover_temporal_reconnects_total 1$/m);
    observer.stop();
  });
});

test('a call waiting to be tried again when its connection closes fails, cancelled: it neither hangs nor throws out of the retry timer', async () => {
  const [host, port] = inject('temporalAddress').split(':');
  const proxy = await TcpProxy.start({ host: host!, port: Number(port) });
  try {
    const { connection, temporalHealth } = await connectClient({ ...testConfig('default').temporal, address: `127.0.0.1:${proxy.port}` });
    await connection.workflowService.getSystemInfo({});
    proxy.refuse(true); // every attempt fails UNAVAILABLE: the SDK's retry waits, then tries again
    const failing = connection.workflowService.getSystemInfo({});
    failing.catch(() => undefined);
    await waitFor(() => (temporalHealth.state().status === 'unreachable' ? true : undefined), 'a failed attempt');
    temporalHealth.stop();
    await connection.close(); // while the retry waits
    await expect(failing).rejects.toMatchObject({ code: GrpcCode.CANCELLED, message: expect.stringContaining('the connection is closed') });
  } finally {
    await proxy.close();
  }
});

describe("the workers' Runtime log", () => {
  const UNAVAILABLE_ERROR =
    'Status { code: Unavailable, message: "tcp connect error", source: Some(tonic::transport::Error(Transport, ConnectError(ConnectError("tcp connect error", 127.0.0.1:7233, Os { code: 111, kind: ConnectionRefused, message: "Connection refused" })))) }';

  afterEach(() => {
    vi.useRealTimers();
  });

  test("core's retry warnings: explained, at warn, one per kind per 10 s with the count; other logs pass through at their level", () => {
    vi.useFakeTimers({ now: 0 });
    const { log, lines } = stubLog();
    const runtimeLog = new TemporalRuntimeLog(log);
    const core = (retries: number) =>
      runtimeLog.warn(`gRPC call poll_activity_task_queue retried ${retries} times`, {
        sdkComponent: 'core',
        target: 'temporalio_client::retry',
        error: UNAVAILABLE_ERROR,
        [Symbol.for('timestamp')]: 1n,
      });
    for (let i = 0; i < 10; i++) core(6); // ten pollers
    for (let i = 0; i < 10; i++) core(7);
    runtimeLog.info('Worker state changed', { sdkComponent: 'worker', taskQueue: 'q', state: 'RUNNING' });
    runtimeLog.debug('Activity started', { sdkComponent: 'activity', attempt: 1 });
    expect(lines.map((l) => l.level)).toEqual(['warn', 'info', 'debug']);
    runtimeLog.warn('No workflows registered, not polling for workflow tasks', { sdkComponent: 'worker' });
    expect(lines.pop()).toMatchObject({ level: 'debug' }); // the API's pull-queue workers mean it
    runtimeLog.warn('Activity failed', { sdkComponent: 'activity', error: new Error('ssh: connection reset') });
    expect(lines.pop()).toMatchObject({ level: 'warn', fields: { error: { type: 'Error', message: 'ssh: connection reset' } } });
    expect(lines[0]!.message).toBe(
      "Temporal is unreachable: the worker's poll_activity_task_queue calls to Temporal keep failing (Unavailable: tcp connect error: Connection refused); " +
        'the worker retries them, and picks up work again once the server is back',
    );
    expect(lines[0]!.fields).toMatchObject({ sdkComponent: 'core', repeated: 1, error: UNAVAILABLE_ERROR });
    expect(lines[1]).toMatchObject({ fields: { sdkComponent: 'worker', state: 'RUNNING' }, message: 'Worker state changed' });
    vi.advanceTimersByTime(10_000);
    expect(lines).toHaveLength(4);
    expect(lines[3]!.fields).toMatchObject({ repeated: 19 });
    expect(lines[3]!.message).toMatch(/\(19 such warnings since the last\)$/);
    runtimeLog.close();
  });

  test('other core warnings keep their words', () => {
    expect(describeCoreWarning('Something odd', {})).toBe('Temporal worker: Something odd');
    expect(
      describeCoreWarning('gRPC call poll_workflow_task_queue retried 3 times', { error: 'Status { code: ResourceExhausted, message: "namespace rate limit exceeded" }' }),
    ).toMatch(/^Temporal is throttling the worker/);
  });

  test('a log window that saw one hit stays quiet', () => {
    vi.useFakeTimers({ now: 0 });
    const writes: number[] = [];
    const window = new LogWindow(10_000);
    window.hit('k', (n) => writes.push(n));
    vi.advanceTimersByTime(30_000);
    expect(writes).toEqual([1]);
  });
});

describe('on a dev server of its own', () => {
  let dir: string;
  let port: number;
  let server: TestWorkflowEnvironment | undefined;
  let connection: Connection | undefined;
  let observer: TemporalCallObserver | undefined;
  let app: FastifyInstance | undefined;
  let native: NativeConnection | undefined;
  let worker: Worker | undefined;
  let workerRun: Promise<void> | undefined;
  const logged: Array<{ level: number; msg: string; [key: string]: unknown }> = [];
  const runtimeLogged = stubLog();

  /** With a visibility rate limit of 1 call a second. */
  async function startServer(): Promise<void> {
    server = await startDevServer({ dbFilename: join(dir, 'temporal.db'), port, dynamicConfig: { 'frontend.namespaceRPS.visibility': 1 } });
  }

  const metric = async (name: string) => {
    const text = (await app!.inject({ method: 'GET', url: '/metrics' })).body;
    return text.split('\n').find((line) => line.startsWith(`${name} `) || line.startsWith(`${name}{`));
  };

  beforeAll(async () => {
    // The workers' log, as `drover worker` installs it: core's retries during the outage land here.
    Runtime.install({ logger: new TemporalRuntimeLog(runtimeLogged.log), telemetryOptions: { logging: { filter: { core: 'WARN', other: 'ERROR' }, forward: {} } } });
    dir = mkdtempSync(join(tmpdir(), 'drover-temporal-health-'));
    port = await freePort();
    await startServer();
    const log = pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line)) });
    const config = testConfig('default');
    config.temporal.address = `127.0.0.1:${port}`;
    const connected = await connectClient(config.temporal, { log });
    connection = connected.connection;
    observer = connected.temporalHealth;
    app = await buildApp({ config, client: connected.client, logger: log, temporalHealth: observer });
    native = await NativeConnection.connect({ address: config.temporal.address });
    worker = await Worker.create({ connection: native, namespace: 'default', taskQueue: 'temporal-health-test', activities: { noop: async () => undefined } });
    workerRun = worker.run();
  });

  afterAll(async () => {
    await app?.close().catch(() => undefined);
    if (worker?.getState() === 'RUNNING') worker.shutdown();
    await workerRun?.catch(() => undefined);
    await native?.close().catch(() => undefined);
    observer?.stop();
    await connection?.close().catch(() => undefined);
    await server?.teardown().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  });

  test('a burst of count calls over the visibility rate limit: counted by method, and a warning that names frontend.namespaceRPS.visibility', async () => {
    const count = () => connection!.withDeadline(Date.now() + 3_000, () => connection!.workflowService.countWorkflowExecutions({ namespace: 'default' }));
    await Promise.allSettled(Array.from({ length: 20 }, count));
    const throttled = observer!.throttledByMethod().get('CountWorkflowExecutions') ?? 0;
    expect(throttled).toBeGreaterThan(0);
    expect(await metric('drover_temporal_throttled_total')).toBe(`drover_temporal_throttled_total{method="CountWorkflowExecutions"} ${throttled}`);
    const warning = logged.find((line) => line.level === 40 && line.method === 'CountWorkflowExecutions');
    expect(warning, JSON.stringify(logged.filter((l) => l.level >= 40))).toBeDefined();
    expect(warning).toMatchObject({ setting: 'frontend.namespaceRPS.visibility', throttled: 1 });
    expect(warning!.msg).toContain('frontend.namespaceRPS.visibility');
    expect(observer!.state().status).toBe('reachable');
    expect(await metric('drover_temporal_reachable')).toBe('drover_temporal_reachable 1');
  }, 60_000);

  test('Temporal down: /readyz says 503 at once, reachable 0, a warning; back: ready, one reconnect, and a line saying so', async () => {
    expect((await app!.inject({ method: 'GET', url: '/readyz' })).statusCode).toBe(200);
    await server!.teardown();
    server = undefined;
    const downAt = Date.now();

    // The first call after the outage fails (its probe, here): from then on the observer knows.
    const first = await app!.inject({ method: 'GET', url: '/readyz' });
    expect(first.statusCode).toBe(503);
    expect(first.json()).toMatchObject({ code: 'temporal_unavailable' });
    const started = Date.now();
    const second = await app!.inject({ method: 'GET', url: '/readyz' });
    expect(Date.now() - started).toBeLessThan(500); // at once: no 3 s probe
    expect(second.statusCode).toBe(503);
    expect(second.json().code).toBe('temporal_unavailable');
    expect(second.json().message).toMatch(/^Temporal has been unreachable since \d{4}-\d\d-\d\dT[\d:.]+Z \(\d+ s\): UNAVAILABLE: /);
    const scrapeStarted = Date.now();
    expect(await metric('drover_temporal_reachable')).toBe('drover_temporal_reachable 0');
    expect(Date.now() - scrapeStarted).toBeLessThan(1_000); // task counts are not waited for while Temporal is down
    // The probe's call among them (the task tallies' seeding, started by an earlier scrape with no
    // tally worker here, may have count calls failing too).
    expect(await metric('drover_temporal_unavailable_total{method="GetSystemInfo"}')).toMatch(/^drover_temporal_unavailable_total\{method="GetSystemInfo"\} [1-9]\d*$/);
    expect(logged.filter((line) => line.msg?.startsWith('Temporal is unreachable'))).toHaveLength(1);

    // The worker's core retries its polls: its warnings reach the log, explained and rate-limited.
    const coreWarning = await waitFor(
      () => runtimeLogged.lines.find((line) => line.level === 'warn' && line.fields.sdkComponent === 'core'),
      "the worker core's warning",
      30_000,
    );
    expect(coreWarning.message).toMatch(/^Temporal is unreachable: the worker's poll_\w+ calls to Temporal keep failing \(Unavailable/);
    const coreWarnings = runtimeLogged.lines.filter((line) => line.fields.sdkComponent === 'core').length;

    await startServer();
    const upAt = Date.now();
    await waitFor(async () => ((await app!.inject({ method: 'GET', url: '/readyz' })).statusCode === 200 ? true : undefined), 'ready again', 30_000);
    const readyAfterMs = Date.now() - upAt;
    console.log(`temporal-health: outage ${((upAt - downAt) / 1000).toFixed(1)} s; /readyz 200 again ${readyAfterMs} ms after the dev server answered; core warnings logged ${coreWarnings}`);
    expect(readyAfterMs).toBeLessThan(5_000);
    expect(await metric('drover_temporal_reachable')).toBe('drover_temporal_reachable 1');
    expect(await metric('drover_temporal_reconnects_total')).toBe('drover_temporal_reconnects_total 1');
    const back = logged.filter((line) => line.msg?.startsWith('Temporal is reachable again after'));
    expect(back).toHaveLength(1);
    expect(back[0]!.level).toBe(30);
    expect(back[0]!.outageSeconds).toBeGreaterThan(1);
  }, 90_000);
});
