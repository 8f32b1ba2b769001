// Workers that come back at once after a Temporal outage. While the server is down, the SDK core
// retries each poll with a backoff that grows to 10 s, and nothing can wake a poller from it:
// measured, a worker's pollers came back 0.2–7 s after the server answered again (replacing the
// worker's connection did not help). `renew()` gives every worker here a fresh connection and
// fresh pollers instead: a new Worker per member, started before the old one is shut down, so
// there is no moment without a poller; work the old one holds finishes on it (its shutdown grace).
import { AsyncLocalStorage } from 'node:async_hooks';
import type { NativeConnection, Worker } from '@temporalio/worker';
import type { WarnLogger } from '../api/pull-matcher';

export type RenewalLog = WarnLogger & { info(object: object, message?: string): void };

interface Member {
  key: string;
  create: (connection: NativeConnection) => Promise<Worker>;
  worker: Worker;
  /** The current worker's run(). */
  running: Promise<void>;
  /** Settles when the member stops for good (removed, closed, or its worker failed); never on a renewal. */
  done: Promise<void>;
  settle: (error?: unknown) => void;
}

export class RenewableWorkers {
  private connection: Promise<NativeConnection> | undefined;
  private readonly members = new Map<string, Member>();
  private renewing: Promise<void> | undefined;
  private renewAgain = false;
  private closed = false;
  private renewals = 0;
  private readonly endedWorkers = new WeakSet<Worker>();
  /**
   * Workers are made and run in the async context this set was made in, never a caller's: a
   * worker's activities run in the context of its run(), and a caller's could carry a deadline
   * (the Temporal client's withDeadline), which every client call of the activities would inherit.
   */
  private readonly outsideCallers = AsyncLocalStorage.snapshot();

  constructor(
    private readonly options: {
      connect: () => Promise<NativeConnection>;
      log?: RenewalLog;
      /** A worker made here has ended (replaced, removed, closed, failed, or never run): what it held is free. */
      ended?: (key: string, worker: Worker) => void;
    },
  ) {}

  /** Times the workers were renewed. */
  get renewCount(): number {
    return this.renewals;
  }

  /**
   * Starts the worker `create` makes (on this set's connection) under `key`; renew() replaces it
   * with another from `create`. Resolves to the worker's end for good: its run() failing, remove(),
   * or close().
   */
  async add(key: string, create: (connection: NativeConnection) => Promise<Worker>): Promise<{ worker: Worker; done: Promise<void> }> {
    if (this.closed) throw new Error('the workers are closed');
    if (this.members.has(key)) throw new Error(`a worker ${key} runs already`);
    const connection = await (this.connection ??= this.options.connect());
    const worker = await this.outsideCallers(() => create(connection));
    if (this.closed) {
      await this.discard(key, worker);
      throw new Error('the workers are closed');
    }
    let settle!: (error?: unknown) => void;
    const done = new Promise<void>((resolve, reject) => {
      settle = (error) => (error === undefined ? resolve() : reject(error));
    });
    done.catch(() => undefined); // a caller that never awaits it is told through run()'s own log
    const member: Member = { key, create, worker, running: Promise.resolve(), done, settle };
    this.members.set(key, member);
    this.run(member, worker);
    return { worker, done };
  }

  /** Shuts down the worker under `key` (its work finishes first) and forgets it. */
  async remove(key: string): Promise<void> {
    const member = this.members.get(key);
    if (!member) return;
    this.members.delete(key);
    await this.stop(key, member.worker, member.running);
    member.settle();
  }

  /** The worker now under `key`. */
  get(key: string): Worker | undefined {
    return this.members.get(key)?.worker;
  }

  /**
   * Fresh pollers for every worker here (Temporal is reachable again after an outage). A renewal
   * asked for while one runs runs once more after it. A renewal that fails (the server went away
   * again) leaves the old workers, whose pollers keep trying on their own.
   */
  renew(): Promise<void> {
    if (this.closed) return Promise.resolve();
    if (this.renewing) {
      this.renewAgain = true;
      return this.renewing;
    }
    this.renewing = (async () => {
      do {
        this.renewAgain = false;
        await this.renewOnce().catch((error: unknown) => this.options.log?.warn({ err: error }, 'could not renew the Temporal workers; their pollers keep retrying'));
      } while (this.renewAgain && !this.closed);
    })().finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  /** Shuts every worker down (their work finishes first) and closes the connection. */
  async close(): Promise<void> {
    this.closed = true;
    await this.renewing;
    await Promise.all([...this.members.keys()].map((key) => this.remove(key)));
    const connection = this.connection;
    this.connection = undefined;
    if (connection) await connection.then((c) => c.close()).catch(() => undefined);
  }

  private async renewOnce(): Promise<void> {
    const members = [...this.members.values()];
    if (members.length === 0) return;
    const fresh = this.options.connect();
    const connection = await fresh;
    const made = await Promise.allSettled(members.map(async (member) => ({ member, worker: await this.outsideCallers(() => member.create(connection)) })));
    const created = made.flatMap((m) => (m.status === 'fulfilled' ? [m.value] : []));
    const failed = made.find((m) => m.status === 'rejected');
    if (failed) {
      // All or none: the ones made are stopped unused.
      await Promise.all(created.map(({ member, worker }) => this.discard(member.key, worker)));
      await connection.close().catch(() => undefined);
      throw failed.reason;
    }
    const old = this.connection;
    this.connection = fresh;
    const retired: Array<Promise<void>> = [];
    for (const { member, worker } of created) {
      const previous = { worker: member.worker, running: member.running };
      if (this.members.get(member.key) !== member) {
        // Removed while the fresh one was made: it never runs.
        retired.push(this.discard(member.key, worker));
        continue;
      }
      member.worker = worker;
      this.run(member, worker);
      retired.push(this.stop(member.key, previous.worker, previous.running));
    }
    this.renewals++;
    this.options.log?.info({ workers: created.map((c) => c.member.key) }, 'Temporal workers renewed: fresh pollers after the outage');
    // The old connection closes once the workers on it have finished their work.
    void Promise.allSettled(retired).then(() => old?.then((c) => c.close()).catch(() => undefined));
  }

  private run(member: Member, worker: Worker): void {
    member.running = this.start(worker).finally(() => this.ended(member.key, worker)).then(
      () => {
        if (member.worker === worker && this.members.get(member.key) === member) {
          // Stopped by something other than remove() or a renewal (the SDK's own shutdown): over.
          this.members.delete(member.key);
          member.settle();
        }
      },
      (error: unknown) => {
        if (member.worker !== worker) {
          this.options.log?.warn({ err: error, worker: member.key }, 'a renewed Temporal worker failed while it shut down');
          return;
        }
        this.members.delete(member.key);
        member.settle(error);
      },
    );
  }

  private start(worker: Worker): Promise<void> {
    return this.outsideCallers(() => worker.run());
  }

  /** Stops a worker made here that never ran (its set closed, or a renewal failed): it is run only to be shut down. */
  private discard(key: string, worker: Worker): Promise<void> {
    return this.stop(key, worker, this.start(worker));
  }

  private async stop(key: string, worker: Worker, running: Promise<void>): Promise<void> {
    if (worker.getState() === 'RUNNING') worker.shutdown();
    await running.catch(() => undefined);
    this.ended(key, worker); // a discarded one
  }

  private ended(key: string, worker: Worker): void {
    if (this.endedWorkers.has(worker)) return;
    this.endedWorkers.add(worker);
    this.options.ended?.(key, worker);
  }
}
