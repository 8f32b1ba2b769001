// Workers that come back at once after a Temporal outage. While the server is down, the SDK core
// retries each poll with a backoff that grows to 10 s, and nothing can wake a poller from it:
// measured, a worker's pollers came back 0.2–7 s after the server answered again (replacing the
// worker's connection did not help). `renew()` gives every worker here a fresh connection and
// fresh pollers instead: a new Worker per member, started before the old one is shut down, so
// there is no moment without a poller; work the old one holds finishes on it (its shutdown grace).
import { AsyncLocalStorage } from 'node:async_hooks';
import type { NativeConnection, Worker } from '@temporalio/worker';
import type { TemporalCallObserver } from '../temporal-health';

/** The little of a logger renewals need (pino and Fastify's logger both fit). */
export interface RenewalLog {
  warn(object: object, message?: string): void;
  info(object: object, message?: string): void;
}

/**
 * Outages shorter than this renew nothing: the core's pollers have backed off less than a second
 * and are back as soon, and a renewal costs each workflow worker its cache (its workflows replay).
 */
export const RENEW_AFTER_OUTAGE_MS = 1_000;

/** Calls `renew` each time `observer` sees Temporal back after an outage worth it. Returns the unsubscription. */
export function renewAfterOutages(observer: TemporalCallObserver, renew: () => Promise<void>): () => void {
  return observer.onReachableAgain(({ outageMs }) => {
    if (outageMs >= RENEW_AFTER_OUTAGE_MS) void renew();
  });
}

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
  /** The connection new workers get; a renewal replaces it. */
  private current: Promise<NativeConnection> | undefined;
  /**
   * Every connection opened here and not yet closed, with its users: the workers on it that have
   * not ended, and the workers still being made on it (a Worker takes a while to make, and a
   * renewal can end the last worker on the connection it replaces meanwhile).
   */
  private readonly connections = new Map<Promise<NativeConnection>, { workers: Set<Worker>; making: number }>();
  private readonly connectionOf = new Map<Worker, Promise<NativeConnection>>();
  private readonly members = new Map<string, Member>();
  /** Workers on their way out, by key: a worker for the same key waits for them (the SDK allows one per queue per connection). */
  private readonly stopping = new Map<string, Set<Promise<void>>>();
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
    await Promise.all(this.stopping.get(key) ?? []);
    const worker = await this.make(key, create);
    if (this.closed || this.members.has(key)) {
      await this.discard(key, worker);
      throw new Error(this.closed ? 'the workers are closed' : `a worker ${key} runs already`);
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

  /** Shuts every worker down, the replaced ones too (their work finishes first), and closes every connection. */
  async close(): Promise<void> {
    this.closed = true;
    await this.renewing;
    await Promise.all([...this.members.keys()].map((key) => this.remove(key)));
    await Promise.all([...this.stopping.values()].flatMap((stops) => [...stops]));
    this.current = undefined;
    await Promise.all([...this.connections.keys()].map((connection) => this.closeConnection(connection)));
  }

  private async renewOnce(): Promise<void> {
    const members = [...this.members.values()];
    if (members.length === 0) return;
    const fresh = this.open();
    await fresh;
    const made = await Promise.allSettled(members.map(async (member) => ({ member, worker: await this.make(member.key, member.create, fresh) })));
    const created = made.flatMap((m) => (m.status === 'fulfilled' ? [m.value] : []));
    const failed = made.find((m) => m.status === 'rejected');
    if (failed) {
      // All or none: the ones made are stopped unused, and the fresh connection closed.
      await Promise.all(created.map(({ member, worker }) => this.discard(member.key, worker)));
      await this.closeConnection(fresh);
      throw failed.reason;
    }
    const old = this.current;
    this.current = fresh;
    for (const { member, worker } of created) {
      if (this.members.get(member.key) !== member) {
        void this.discard(member.key, worker); // removed while the fresh one was made: it never runs
        continue;
      }
      const previous = { worker: member.worker, running: member.running };
      member.worker = worker;
      this.run(member, worker);
      void this.stop(member.key, previous.worker, previous.running);
    }
    this.renewals++;
    this.options.log?.info({ workers: created.map((c) => c.member.key) }, 'Temporal workers renewed: fresh pollers after the outage');
    if (old) this.closeIfUnused(old); // else once its last worker has ended
  }

  /** Opens a connection, kept with the workers on it until it is closed. */
  private open(): Promise<NativeConnection> {
    const connection = this.options.connect();
    this.connections.set(connection, { workers: new Set(), making: 0 });
    // A connection that could not be opened is forgotten: the next add() tries again.
    connection.catch(() => {
      this.connections.delete(connection);
      if (this.current === connection) this.current = undefined;
    });
    return connection;
  }

  private async make(key: string, create: Member['create'], on?: Promise<NativeConnection>): Promise<Worker> {
    const connection = on ?? (this.current ??= this.open());
    const users = this.connections.get(connection);
    if (users) users.making++;
    let worker: Worker;
    try {
      worker = await this.outsideCallers(async () => create(await connection));
    } catch (error) {
      if (users) users.making--;
      this.closeIfUnused(connection);
      throw error;
    }
    if (users) {
      users.making--;
      users.workers.add(worker);
    }
    this.connectionOf.set(worker, connection);
    return worker;
  }

  private run(member: Member, worker: Worker): void {
    member.running = this.start(worker)
      .finally(() => this.ended(member.key, worker))
      .then(
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

  private stop(key: string, worker: Worker, running: Promise<void>): Promise<void> {
    if (worker.getState() === 'RUNNING') worker.shutdown();
    const stops = this.stopping.get(key) ?? new Set<Promise<void>>();
    this.stopping.set(key, stops);
    const stopped = running
      .catch(() => undefined)
      .then(() => this.ended(key, worker)) // a discarded one's end
      .finally(() => {
        stops.delete(stopped);
        if (stops.size === 0 && this.stopping.get(key) === stops) this.stopping.delete(key);
      });
    stops.add(stopped);
    return stopped;
  }

  private ended(key: string, worker: Worker): void {
    if (this.endedWorkers.has(worker)) return;
    this.endedWorkers.add(worker);
    const connection = this.connectionOf.get(worker);
    this.connectionOf.delete(worker);
    if (connection) {
      this.connections.get(connection)?.workers.delete(worker);
      this.closeIfUnused(connection);
    }
    this.options.ended?.(key, worker);
  }

  /** A connection no longer current closes once no worker is left on it or being made on it (the SDK refuses to close one in use). */
  private closeIfUnused(connection: Promise<NativeConnection>): void {
    const users = this.connections.get(connection);
    if (connection !== this.current && users && users.workers.size === 0 && users.making === 0) void this.closeConnection(connection);
  }

  private async closeConnection(connection: Promise<NativeConnection>): Promise<void> {
    if (!this.connections.delete(connection)) return;
    await connection.then((c) => c.close()).catch(() => undefined);
  }
}
