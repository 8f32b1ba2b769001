// Pull agents matched by Temporal's own task queues. Every pending task keeps an offer (an
// activity) on its type's pull queue, or on its reserved agent's own queue; Temporal's matching
// orders the offers (priority, then fairness across repositories, then age). An API process polls
// a queue only while one of its agents that could take the offer waits: a slot supplier hands out
// one poll permit per such agent. The offer's activity, run here, claims the task for the
// longest-waiting agent through the task workflow's claim Update, which alone decides who wins.
// Nothing on this path queries visibility, and an offer reaches whichever process its agent polls.
import { ApplicationFailure, Context } from '@temporalio/activity';
import { type NativeConnection, Worker, type CustomSlotSupplier, type SlotInfo, type SlotPermit } from '@temporalio/worker';
import { RenewableWorkers, type RenewalLog } from '../workers/renewable-workers';
import type { ClaimGrant, InstanceRef } from '../model';
import { agentPullQueue, pullQueue } from '../names';
import type { TaskClient } from '../task-client';
import { TaskError } from '../task-errors';
import { OFFER_RETURNED, type OfferActivities, type OfferOutcome, type OfferRequest } from '../workflows/activity-types';

export interface PullAgent {
  id: string;
  types: string[];
}

export type WaitOutcome =
  | { kind: 'task'; grant: ClaimGrant }
  | { kind: 'timeout' }
  | { kind: 'aborted' }
  | { kind: 'shutdown' };

export interface PullMetrics {
  claimWon(): void;
  claimLost(code: string): void;
  waiting(count: number): void;
  offerReturned(): void;
}

export interface PullMatcherOptions {
  /** The worker connection, opened when the first agent waits (again on renew(); closed by close()). */
  connect: () => Promise<NativeConnection>;
  namespace: string;
  tasks: TaskClient;
  log: RenewalLog;
  metrics?: PullMetrics;
  /** An offer that finds no agent of its kind waiting here waits this long for one before it is given back. */
  returnAfterMs?: number;
  /** A queue nobody here waited on for this long stops being polled until someone does again. */
  idleQueueMs?: number;
  /** A wait shorter than this (`wait=0`) still lasts this long: long enough for a poll to bring an offer already queued. */
  minWaitMs?: number;
  /** Test seam: runs after a claim is won and before the grant is handed over. */
  afterClaim?: (grant: ClaimGrant, agent: PullAgent) => Promise<void>;
}

interface Waiter {
  agent: PullAgent;
  queues: string[];
  /** When the agent's wait ends (epoch ms). */
  deadline: number;
  state: 'waiting' | 'claiming' | 'done';
  /** The agent's connection closed while its claim was on its way: the task goes back. */
  abandoned: boolean;
  resolve(outcome: WaitOutcome): void;
}

/** One queue's worker and the permits it holds. */
interface QueueWorker {
  queue: string;
  /** Its worker runs (in `workers`, under the queue's name). */
  started: boolean;
  starting?: Promise<void>;
  /**
   * The poll permits of each of the queue's workers that has not ended: one, or during a renewal
   * after an outage, the fresh one and its predecessor. An ended worker's no longer count, released
   * or not (a worker shut down while its polls back off need not release them).
   */
  gates: Map<Worker, { permits: number }>;
  lastWanted: number;
}

export class PullMatcher {
  private readonly waiters: Waiter[] = [];
  private readonly queues = new Map<string, QueueWorker>();
  /** Reservations blocked until a waiter wants their queue. */
  private readonly blocked = new Set<() => void>();
  /** Offers here that found no waiter, waiting briefly for one. */
  private readonly orphanOffers = new Set<() => void>();
  private readonly inflight = new Set<Promise<unknown>>();
  private readonly workers: RenewableWorkers;
  private sweeper: NodeJS.Timeout | undefined;
  private closed = false;
  private lastErrorLog = 0;

  constructor(private readonly options: PullMatcherOptions) {
    this.workers = new RenewableWorkers({
      connect: options.connect,
      log: options.log,
      ended: (queue, worker) => {
        this.queues.get(queue)?.gates.delete(worker);
        this.wakeReservations();
      },
    });
  }

  /** Fresh pollers on every queue polled here: Temporal is reachable again after an outage. */
  renew(): Promise<void> {
    return this.workers.renew();
  }

  get waitingCount(): number {
    return this.waiters.length;
  }

  /**
   * Waits up to `waitMs` for a task `agent` can claim and claims it. When `signal` aborts (the
   * agent's connection closed), the wait ends; a claim already on its way is given back.
   */
  wait(agent: PullAgent, waitMs: number, signal?: AbortSignal): Promise<WaitOutcome> {
    if (this.closed) return Promise.resolve({ kind: 'shutdown' });
    if (signal?.aborted) return Promise.resolve({ kind: 'aborted' });
    return new Promise<WaitOutcome>((resolve) => {
      const queues = [agentPullQueue(agent.id), ...agent.types.map(pullQueue)];
      const waitFor = Math.max(waitMs, this.options.minWaitMs ?? 1_000);
      const waiter: Waiter = {
        agent,
        queues,
        deadline: Date.now() + waitFor,
        state: 'waiting',
        abandoned: false,
        resolve: (outcome) => {
          if (waiter.state === 'done') return;
          waiter.state = 'done';
          clearTimeout(timer);
          this.remove(waiter);
          resolve(outcome);
        },
      };
      // The wait ends on time even while a claim for the agent is on its way (a task workflow slow
      // to answer under load): the claim, if it wins, then gives the task back.
      const timer = setTimeout(() => {
        if (waiter.state === 'claiming') waiter.abandoned = true;
        waiter.resolve({ kind: 'timeout' });
      }, waitFor);
      signal?.addEventListener(
        'abort',
        () => {
          if (waiter.state === 'waiting') waiter.resolve({ kind: 'aborted' });
          else if (waiter.state === 'claiming') waiter.abandoned = true; // the claim's end gives the task back
        },
        { once: true },
      );
      this.waiters.push(waiter);
      this.options.metrics?.waiting(this.waiters.length);
      for (const queue of queues) this.want(queue);
      this.wakeReservations();
      this.wakeOrphans();
    });
  }

  /** Gives a granted task back (the agent never got it): its workflow offers it again at once. */
  async giveBack(grant: ClaimGrant, agent: PullAgent): Promise<void> {
    const holder: InstanceRef = { kind: 'agent', id: agent.id };
    try {
      await this.options.tasks.release(grant.taskId, holder, grant.attempt);
    } catch (error) {
      // Already over (cancelled, lapsed): nothing is held by nobody. Otherwise the lease will lapse.
      this.options.log.warn({ err: error, taskId: grant.taskId, agent: agent.id }, 'could not give back a task whose agent went away');
    }
  }

  /** Ends every wait (`shutdown`), lets claims on their way finish, and stops polling. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    for (const waiter of [...this.waiters]) if (waiter.state === 'waiting') waiter.resolve({ kind: 'shutdown' });
    this.wakeReservations();
    this.wakeOrphans();
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
    await Promise.allSettled([...this.queues.values()].map((q) => q.starting));
    await this.workers.close();
  }

  // ---- queues and their poll permits -----------------------------------------------------------

  /** How many waiting agents here could take an offer from `queue`, less the permits already out. */
  private unmetDemand(queue: string): number {
    const demand = this.waiters.filter((w) => w.state === 'waiting' && w.queues.includes(queue)).length;
    return demand - this.permitsOut(queue);
  }

  private want(queue: string): void {
    let entry = this.queues.get(queue);
    if (!entry) {
      entry = { queue, started: false, gates: new Map(), lastWanted: Date.now() };
      this.queues.set(queue, entry);
    }
    entry.lastWanted = Date.now();
    if (!entry.started && !entry.starting) this.startQueue(entry);
    this.sweeper ??= setInterval(() => this.sweepIdleQueues(), Math.max(1_000, (this.options.idleQueueMs ?? 60_000) / 2));
    this.sweeper.unref?.();
  }

  private startQueue(entry: QueueWorker): void {
    const starting = (async () => {
      const { done } = await this.workers.add(entry.queue, async (connection) => {
        const gate = { permits: 0 };
        const worker = await Worker.create({
          connection,
          namespace: this.options.namespace,
          taskQueue: entry.queue,
          activities: this.activities(),
          identity: `drover-api:${process.pid}@${entry.queue}`,
          tuner: {
            activityTaskSlotSupplier: this.pollGate(entry, gate),
            workflowTaskSlotSupplier: { type: 'fixed-size', numSlots: 1 },
            localActivityTaskSlotSupplier: { type: 'fixed-size', numSlots: 1 },
            nexusTaskSlotSupplier: { type: 'fixed-size', numSlots: 1 },
          },
          // One poll per permit, up to this many agents waiting here at once on one queue.
          activityTaskPollerBehavior: { type: 'simple-maximum', maximum: 64 },
          shutdownGraceTime: '5 seconds',
        });
        entry.gates.set(worker, gate);
        this.wakeReservations(); // its polls asked before it counted
        return worker;
      });
      entry.started = true;
      done.catch((error: unknown) => {
        this.logError(error, `pull queue ${entry.queue} stopped`);
        // Its worker failed: the next agent that wants the queue starts another.
        if (this.queues.get(entry.queue) === entry) this.queues.delete(entry.queue);
      });
      if (this.closed) await this.workers.remove(entry.queue); // close() came while it started
    })()
      .catch((error: unknown) => this.logError(error, `cannot poll pull queue ${entry.queue}`))
      .finally(() => {
        entry.starting = undefined;
        // A queue that failed to start is tried again by the next agent that wants it.
        if (!entry.started) this.queues.delete(entry.queue);
      });
    entry.starting = starting;
  }

  private async stopQueue(entry: QueueWorker): Promise<void> {
    await entry.starting;
    await this.workers.remove(entry.queue);
    entry.started = false;
  }

  /** Queues nobody here wanted for a while stop polling (their workers end). */
  private sweepIdleQueues(): void {
    const idleMs = this.options.idleQueueMs ?? 60_000;
    for (const entry of [...this.queues.values()]) {
      const wanted = this.waiters.some((w) => w.queues.includes(entry.queue));
      if (wanted || entry.starting || this.permitsOut(entry.queue) > 0 || Date.now() - entry.lastWanted < idleMs) continue;
      this.queues.delete(entry.queue);
      void this.stopQueue(entry);
    }
  }

  private permitsOut(queue: string): number {
    let out = 0;
    for (const gate of this.queues.get(queue)?.gates.values() ?? []) out += gate.permits;
    return out;
  }

  /** Hands out one poll permit per waiting agent that could use the queue, counted in `gate` (its worker's). */
  private pollGate(entry: QueueWorker, gate: { permits: number }): CustomSlotSupplier<SlotInfo> {
    const take = (): SlotPermit | null => {
      if (this.closed || ![...entry.gates.values()].includes(gate) || this.unmetDemand(entry.queue) <= 0) return null;
      gate.permits += 1;
      return {};
    };
    return {
      type: 'custom',
      reserveSlot: (_ctx, abortSignal) =>
        new Promise<SlotPermit>((resolve, reject) => {
          const attempt = () => {
            const permit = take();
            if (!permit) return;
            cleanup();
            resolve(permit);
          };
          const onAbort = () => {
            cleanup();
            reject(abortSignal.reason);
          };
          const cleanup = () => {
            this.blocked.delete(attempt);
            abortSignal.removeEventListener('abort', onAbort);
          };
          this.blocked.add(attempt);
          abortSignal.addEventListener('abort', onAbort, { once: true });
          if (abortSignal.aborted) onAbort();
          else attempt();
        }),
      tryReserveSlot: () => take(),
      markSlotUsed: () => {},
      releaseSlot: () => {
        gate.permits -= 1;
        this.wakeReservations();
      },
    };
  }

  private wakeReservations(): void {
    for (const attempt of [...this.blocked]) attempt();
  }

  private wakeOrphans(): void {
    for (const wake of [...this.orphanOffers]) wake();
  }

  private remove(waiter: Waiter): void {
    const index = this.waiters.indexOf(waiter);
    if (index >= 0) this.waiters.splice(index, 1);
    this.options.metrics?.waiting(this.waiters.length);
  }

  // ---- the offer activity --------------------------------------------------------------------

  private activities(): OfferActivities {
    return { offerTask: (request) => this.track(this.takeOffer(request)) };
  }

  private track<T>(work: Promise<T>): Promise<T> {
    this.inflight.add(work);
    void work.finally(() => this.inflight.delete(work)).catch(() => undefined);
    return work;
  }

  /** The waiter an offer goes to: the agent it is reserved for, else the longest-waiting one of its type. */
  private waiterFor(request: OfferRequest): Waiter | undefined {
    return this.waiters.find(
      (w) => w.state === 'waiting' && (request.agentId ? w.agent.id === request.agentId : w.agent.types.includes(request.agentType)),
    );
  }

  /** Waits up to returnAfterMs for a waiter the offer suits (one whose poll ended just before may be back). */
  private async findWaiter(request: OfferRequest): Promise<Waiter | undefined> {
    const deadline = Date.now() + (this.options.returnAfterMs ?? 2_000);
    for (;;) {
      const waiter = this.waiterFor(request);
      if (waiter || this.closed || Date.now() >= deadline) return waiter;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(timer);
          this.orphanOffers.delete(wake);
          resolve();
        };
        const timer = setTimeout(wake, Math.max(1, deadline - Date.now()));
        this.orphanOffers.add(wake);
      });
    }
  }

  private async takeOffer(request: OfferRequest): Promise<OfferOutcome> {
    const waiter = await this.findWaiter(request);
    if (!waiter) {
      // The agent this poll was for left: Temporal offers the task again, to whoever polls now.
      this.options.metrics?.offerReturned();
      throw ApplicationFailure.create({
        type: OFFER_RETURNED,
        message: `no agent for task ${request.taskId} waits here any more`,
        nonRetryable: false,
        nextRetryDelay: '10 milliseconds',
      });
    }
    waiter.state = 'claiming';
    const { agent } = waiter;
    const info = Context.current().info;
    try {
      const grant = await this.options.tasks.claim(
        request.taskId,
        { kind: 'agent', id: agent.id, types: agent.types },
        { requestId: `${info.workflowExecution?.runId ?? request.taskId}.${request.offer}.${info.attempt}`, offer: request.offer },
      );
      this.options.metrics?.claimWon();
      if (this.options.afterClaim) await this.options.afterClaim(grant, agent).catch(() => undefined);
      if (waiter.abandoned || this.closed) {
        waiter.state = 'done';
        this.remove(waiter);
        await this.giveBack(grant, agent);
      } else {
        waiter.state = 'waiting'; // so that resolve() takes it
        waiter.resolve({ kind: 'task', grant });
      }
      return { kind: 'claimed', attempt: grant.attempt, agentId: agent.id };
    } catch (error) {
      if (waiter.state === 'claiming') {
        if (waiter.abandoned) waiter.resolve({ kind: 'aborted' });
        else if (this.closed) waiter.resolve({ kind: 'shutdown' });
        else if (Date.now() >= waiter.deadline) waiter.resolve({ kind: 'timeout' });
        else {
          waiter.state = 'waiting';
          this.wakeReservations();
        }
      }
      if (error instanceof TaskError) {
        // The workflow said no (an SSH host or another offer won, the task moved on): this offer is over.
        this.options.metrics?.claimLost(error.code);
        return { kind: 'lost', rejection: { code: error.code === 'task_not_found' ? 'task_closed' : error.code, message: error.message } };
      }
      this.logError(error, `claim of task ${request.taskId} failed`);
      throw error; // Temporal unreachable, say: the offer is retried
    }
  }

  private logError(error: unknown, message: string): void {
    if (Date.now() - this.lastErrorLog < 10_000) return;
    this.lastErrorLog = Date.now();
    this.options.log.warn({ err: error }, message);
  }
}
