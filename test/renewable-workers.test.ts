// RenewableWorkers on the shared dev server, through a TCP proxy the test cuts as an outage: a
// renewal puts a fresh worker on a fresh connection in place of the old one, which stops; the
// member's end is not a renewal's; a renewal that cannot connect leaves the old worker polling.
// An SSH host's workers renewed mid-run leave the run alone.
import { AsyncLocalStorage } from 'node:async_hooks';
import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import { bundleWorkflowCode, NativeConnection, Worker } from '@temporalio/worker';
import { afterAll, beforeAll, expect, inject, test } from 'vitest';
import { GrpcCode, TemporalCallObserver } from '../src/temporal-health';
import { RENEW_AFTER_OUTAGE_MS, RenewableWorkers, renewAfterOutages } from '../src/workers/renewable-workers';
import type { RunContext } from '../src/activities/runner';
import { RecordingRunner } from './support/runners';
import { connectTestTemporal, type TestTemporal, uniqueRepo, uniqueType } from './support/temporal';
import { TcpProxy } from './support/tcp-proxy';

let temporal: TestTemporal;
let proxy: TcpProxy;
let bundle: { code: string };
let connection: Connection;
let client: Client;
const silent = { warn: () => {}, info: () => {} };

beforeAll(async () => {
  temporal = await connectTestTemporal(); // quiets the SDK's Runtime
  const [host, port] = inject('temporalAddress').split(':');
  proxy = await TcpProxy.start({ host: host!, port: Number(port) });
  bundle = await bundleWorkflowCode({ workflowsPath: fileURLToPath(new URL('./fixtures/echo-workflow.ts', import.meta.url)), logger: { log() {}, trace() {}, debug() {}, info() {}, warn() {}, error() {} } });
  connection = await Connection.connect({ address: inject('temporalAddress') });
  client = new Client({ connection });
});

afterAll(async () => {
  await connection?.close();
  await proxy?.close();
  await temporal?.close();
});

function echoWorkers(connect = () => NativeConnection.connect({ address: `127.0.0.1:${proxy.port}` }), ended?: (key: string, worker: Worker) => void) {
  const taskQueue = `renewable-${randomUUID().slice(0, 8)}`;
  const workers = new RenewableWorkers({ connect, log: silent, ended });
  const create = (c: NativeConnection) => Worker.create({ connection: c, taskQueue, workflowBundle: bundle });
  const echo = (text: string) => client.workflow.execute('echo', { taskQueue, workflowId: `${taskQueue}-${randomUUID()}`, args: [text], workflowRunTimeout: '60s' });
  return { workers, create, echo, taskQueue };
}

test('after an outage, renew() puts a fresh worker in place of the old one, which stops; the member is not over', async () => {
  const { workers, create, echo, taskQueue } = echoWorkers();
  const { worker: first, done } = await workers.add(taskQueue, create);
  let over = false;
  void done.then(() => (over = true));
  expect(await echo('before')).toBe('before');

  proxy.refuse(true); // the outage: every poll fails, and the core's pollers back off
  await new Promise((resolve) => setTimeout(resolve, 5_000));
  proxy.refuse(false);
  await workers.renew();

  const renewed = workers.get(taskQueue)!;
  expect(renewed).not.toBe(first);
  expect(renewed.getState()).toBe('RUNNING');
  expect(workers.renewCount).toBe(1);
  expect(await echo('after')).toBe('after');
  await expect.poll(() => first.getState(), { timeout: 20_000 }).toBe('STOPPED');
  expect(over).toBe(false);

  await workers.remove(taskQueue);
  await done;
  expect(renewed.getState()).toBe('STOPPED');
  expect(workers.get(taskQueue)).toBeUndefined();
  await workers.close();
}, 60_000);

test('a renewal that cannot connect leaves the old worker polling; renewals asked for meanwhile run once more after', async () => {
  let refuse = false;
  let connects = 0;
  const { workers, create, echo, taskQueue } = echoWorkers(async () => {
    connects++;
    if (refuse) throw new Error('Temporal is down again');
    return NativeConnection.connect({ address: inject('temporalAddress') });
  });
  // A renewal asked for inside a call's context (the observer hears the answer to a probe with a
  // 1 s deadline) makes its workers outside it: their activities' calls would inherit it.
  const callerContext = new AsyncLocalStorage<string>();
  const contexts: Array<string | undefined> = [];
  const { worker: first } = await workers.add(taskQueue, (c) => {
    contexts.push(callerContext.getStore());
    return create(c);
  });
  refuse = true;
  await workers.renew();
  expect(workers.get(taskQueue)).toBe(first);
  expect(workers.renewCount).toBe(0);
  expect(await echo('still')).toBe('still');

  refuse = false;
  connects = 0;
  const renewing = callerContext.run('a probe with a deadline', () => workers.renew());
  const again = workers.renew(); // while one runs: it runs once more, after
  expect(again).toBe(renewing);
  void workers.renew();
  await renewing;
  expect(connects).toBe(2);
  expect(contexts).toEqual([undefined, undefined, undefined]);
  expect(workers.renewCount).toBe(2);
  expect(workers.get(taskQueue)).not.toBe(first);
  expect(await echo('renewed twice')).toBe('renewed twice');
  await workers.close();
  expect(workers.get(taskQueue)).toBeUndefined();
  await expect(workers.add('late', create)).rejects.toThrow(/closed/);
}, 60_000);

test("an SSH host's workers renewed while its agent runs: the run finishes undisturbed on the old worker, and the renewed ones take the next task", async () => {
  await temporal.startTaskWorker();
  const type = uniqueType();
  let finish!: () => void;
  const finishing = new Promise<void>((resolve) => (finish = resolve));
  let started!: (ctx: RunContext) => void;
  const running = new Promise<RunContext>((resolve) => (started = resolve));
  const runner = new RecordingRunner(async (ctx) => {
    if (runner.runs.length === 1) {
      started(ctx);
      await finishing;
    }
    return { outcome: 'success', summary: `done ${ctx.taskId}` };
  });
  const host = await temporal.startHost(`h-renew-${type}`, [type], 1, runner);
  const start = (title: string) => temporal.tasks.start({ agentType: type, kind: 'implement', repo: uniqueRepo(), number: 1, title, prompt: 'p' });

  const { taskId } = await start('runs through a renewal');
  const ctx = await running;
  await host.renew();
  expect(host.renewCount).toBe(1);
  // Longer than the claim workers' shutdown grace (5 s): the run is on a worker that leaves it be.
  await new Promise((resolve) => setTimeout(resolve, 6_000));
  finish();
  const final = await temporal.tasks.result(taskId);
  expect(final).toMatchObject({ state: 'completed', lostAttempts: 0 });
  expect(final.attempts).toHaveLength(1);
  expect(ctx.detach.aborted).toBe(false); // not handed to a next try: it ran on
  expect(runner.aborted).toEqual([]);

  const { taskId: next } = await start('taken by the renewed workers');
  expect((await temporal.tasks.result(next)).state).toBe('completed');
  expect(runner.runs.map((r) => r.taskId)).toEqual([taskId, next]);
}, 90_000);

test('a connection closes once no worker is left on it, also one a worker joined during a renewal; a key re-added while its worker stops waits for it; close() closes them all', async () => {
  const opened: NativeConnection[] = [];
  const closed = new Set<NativeConnection>();
  const endedWorkers = new Set<Worker>();
  const { workers, create, echo, taskQueue } = echoWorkers(async () => {
    const connection = await NativeConnection.connect({ address: inject('temporalAddress') });
    const close = connection.close.bind(connection);
    connection.close = async () => {
      closed.add(connection);
      await close();
    };
    opened.push(connection);
    return connection;
  }, (_key, worker) => endedWorkers.add(worker));
  const { worker: replaced } = await workers.add(taskQueue, create);
  // Added while a renewal makes its workers: it lands on the connection being replaced. Its
  // worker is still being made when the renewal is done and the worker it replaced has ended,
  // the moment that connection's last made worker is gone: it must stay open for this one.
  const renewing = workers.renew();
  const other = `${taskQueue}-other`;
  await workers.add(other, async (c) => {
    await renewing;
    await expect.poll(() => endedWorkers.has(replaced), { timeout: 20_000 }).toBe(true);
    return Worker.create({ connection: c, taskQueue: other, workflowBundle: bundle });
  });
  expect(opened).toHaveLength(2);
  expect(await echo('on the fresh connection')).toBe('on the fresh connection');
  const [first, second] = opened as [NativeConnection, NativeConnection];
  // A worker added while the renewal made its workers is not renewed (its pollers are new anyway).
  expect(workers.get(other)!.connection).toBe(first);
  expect(workers.get(taskQueue)!.connection).toBe(second);
  await new Promise((resolve) => setTimeout(resolve, 500));
  expect(closed.has(first)).toBe(false); // `other` still runs on it
  await workers.remove(other);
  await expect.poll(() => closed.has(first)).toBe(true);
  expect(closed.has(second)).toBe(false);

  // Removed, and wanted again at once: the new worker waits for the old one on the same connection.
  const removing = workers.remove(taskQueue);
  await workers.add(taskQueue, create);
  await removing;
  expect(await echo('again')).toBe('again');

  await workers.close();
  expect(opened.every((c) => closed.has(c))).toBe(true);
}, 60_000);

test('only an outage long enough for the pollers to have backed off renews the workers', () => {
  let now = 0;
  const observer = new TemporalCallObserver({ now: () => now });
  let renewals = 0;
  const stop = renewAfterOutages(observer, async () => void renewals++);
  const outage = (ms: number) => {
    observer.record('GetSystemInfo', GrpcCode.UNAVAILABLE, 'No connection established');
    now += ms;
    observer.record('GetSystemInfo', 0);
  };
  observer.record('GetSystemInfo', 0);
  outage(RENEW_AFTER_OUTAGE_MS - 1); // a blip: the pollers are back as soon, and the caches kept
  expect(renewals).toBe(0);
  outage(RENEW_AFTER_OUTAGE_MS);
  expect(renewals).toBe(1);
  stop();
  outage(60_000);
  expect(renewals).toBe(1);
});
