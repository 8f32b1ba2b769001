// The dequeue hub: one per API process. Pull agents' long-polls wait here; a single watcher
// finds claimable tasks for all of them at once (one visibility query per poll interval while
// anyone waits, plus immediate local wake-ups when this process starts, assigns or gets back a
// task) and claims them through the task's workflow — which alone decides who wins. A rejected
// candidate is dropped and the next one tried. Nothing here is durable: a task is either still
// pending in its workflow or granted to an agent.
import type { ClaimGrant, InstanceRef } from '../model';
import type { TaskClient } from '../task-client';
import { TaskError } from '../task-errors';

/** The little of a logger these need (pino and Fastify's logger both fit). */
export interface WarnLogger {
  warn(object: object, message?: string): void;
}

export interface HubAgent {
  id: string;
  types: string[];
}

export type WaitOutcome =
  | { kind: 'task'; grant: ClaimGrant }
  | { kind: 'timeout' }
  | { kind: 'aborted' }
  | { kind: 'shutdown' };

export interface HubMetrics {
  claimWon(): void;
  claimLost(code: string): void;
  waiting(count: number): void;
}

export interface HubOptions {
  tasks: TaskClient;
  log: WarnLogger;
  pollIntervalMs: number;
  /** At most this many candidates per visibility query. */
  batch?: number;
  metrics?: HubMetrics;
  /** Test seam: runs after a claim is won and before the grant is handed over. */
  afterClaim?: (grant: ClaimGrant, agent: HubAgent) => Promise<void>;
}

interface Waiter {
  agent: HubAgent;
  addedAt: number;
  deadline: number;
  state: 'waiting' | 'claiming' | 'done';
  abandoned: boolean;
  /** Whether a full look at visibility happened while this waiter waited (a `wait=0` poll gets one). */
  sawRefresh: boolean;
  /** Tasks this waiter may not take (reserved for another agent). */
  excluded: Set<string>;
  resolve(outcome: WaitOutcome): void;
}

interface Candidate {
  taskId: string;
  agentType: string;
  /** Reserved for this instance while pending (DroverAssignee). */
  assignee?: string;
  startedAt: number;
  hintedAt?: number;
}

/** How long a candidate whose claim was rejected is left alone (visibility may still show it pending). */
const SUPPRESS_MS = 1_000;
/** Hinted tasks are kept this long even when visibility does not list them yet. */
const HINT_TTL_MS = 5_000;

export class DequeueHub {
  private readonly waiters: Waiter[] = [];
  private readonly candidates = new Map<string, Candidate>();
  private readonly claiming = new Set<string>();
  private readonly suppressed = new Map<string, number>();
  private readonly inflight = new Set<Promise<void>>();
  private running = false;
  private closed = false;
  private lastRefresh = 0;
  private wakeUp: (() => void) | undefined;
  private lastErrorLog = 0;

  constructor(private readonly options: HubOptions) {}

  get waitingCount(): number {
    return this.waiters.length;
  }

  /**
   * Waits up to `waitMs` for a task `agent` can claim and claims it. When `signal` aborts (the
   * agent's connection closed), the wait ends; a claim already on its way is given back.
   */
  wait(agent: HubAgent, waitMs: number, signal?: AbortSignal): Promise<WaitOutcome> {
    if (this.closed) return Promise.resolve({ kind: 'shutdown' });
    if (signal?.aborted) return Promise.resolve({ kind: 'aborted' });
    return new Promise<WaitOutcome>((resolve) => {
      const now = Date.now();
      const waiter: Waiter = {
        agent,
        addedAt: now,
        deadline: now + waitMs,
        state: 'waiting',
        abandoned: false,
        sawRefresh: false,
        excluded: new Set(),
        resolve: (outcome) => {
          if (waiter.state === 'done') return;
          waiter.state = 'done';
          this.remove(waiter);
          resolve(outcome);
        },
      };
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
      this.ensureLoop();
    });
  }

  /** A task this process knows is claimable now (it just started, assigned or got it back). */
  hint(task: { taskId: string; agentType: string; assignee?: string }): void {
    if (this.closed) return;
    this.suppressed.delete(task.taskId);
    const existing = this.candidates.get(task.taskId);
    this.candidates.set(task.taskId, {
      taskId: task.taskId,
      agentType: task.agentType,
      assignee: task.assignee,
      startedAt: existing?.startedAt ?? Date.now(),
      hintedAt: Date.now(),
    });
    if (this.waiters.length > 0) this.ensureLoop();
  }

  /** Gives a granted task back (the agent never got it) and offers it to the next waiter. */
  async giveBack(grant: ClaimGrant, agent: HubAgent): Promise<void> {
    const holder: InstanceRef = { kind: 'agent', id: agent.id };
    try {
      await this.options.tasks.release(grant.taskId, holder, grant.attempt);
      this.hint({ taskId: grant.taskId, agentType: grant.input.agentType });
    } catch (error) {
      // Already over (cancelled, lapsed): nothing is held by nobody. Otherwise the lease will lapse.
      this.options.log.warn({ err: error, taskId: grant.taskId, agent: agent.id }, 'could not give back a task whose agent went away');
    }
  }

  /** Ends every wait (`shutdown`) and lets claims already on their way finish. */
  async close(): Promise<void> {
    this.closed = true;
    for (const waiter of [...this.waiters]) if (waiter.state === 'waiting') waiter.resolve({ kind: 'shutdown' });
    this.wake();
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  // ---- the one watcher -------------------------------------------------------------------------

  private remove(waiter: Waiter): void {
    const index = this.waiters.indexOf(waiter);
    if (index >= 0) this.waiters.splice(index, 1);
    this.options.metrics?.waiting(this.waiters.length);
  }

  private wake(): void {
    const wakeUp = this.wakeUp;
    this.wakeUp = undefined;
    wakeUp?.();
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakeUp = undefined;
        resolve();
      }, ms);
      this.wakeUp = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private ensureLoop(): void {
    if (this.running) {
      this.wake();
      return;
    }
    this.running = true;
    void this.loop().finally(() => {
      this.running = false;
      // A waiter may have arrived while the loop was finishing.
      if (!this.closed && this.waiters.some((w) => w.state === 'waiting')) this.ensureLoop();
    });
  }

  private async loop(): Promise<void> {
    while (!this.closed && this.waiters.length > 0) {
      if (Date.now() - this.lastRefresh >= this.options.pollIntervalMs) await this.refresh();
      this.match();
      this.expire();
      if (this.waiters.length === 0) break;
      const waiting = this.waiters.filter((w) => w.state === 'waiting');
      const nextDeadline = Math.min(...waiting.filter((w) => w.sawRefresh).map((w) => w.deadline), Infinity);
      const until = Math.min(this.lastRefresh + this.options.pollIntervalMs, nextDeadline);
      await this.sleep(Math.max(1, until - Date.now()));
    }
  }

  /** One visibility query for every waiting agent's types. */
  private async refresh(): Promise<void> {
    const started = Date.now();
    const types = [...new Set(this.waiters.flatMap((w) => w.agent.types))];
    try {
      const found = await this.options.tasks.list(
        { openOnly: true, state: 'pending', modes: ['undecided', 'http_pull'], agentTypes: types },
        this.options.batch ?? 500,
      );
      const listed = new Set<string>();
      for (const task of found) {
        if (!task.agentType) continue;
        listed.add(task.taskId);
        const previous = this.candidates.get(task.taskId);
        this.candidates.set(task.taskId, {
          taskId: task.taskId,
          agentType: task.agentType,
          assignee: task.assignee,
          startedAt: task.startedAt ? Date.parse(task.startedAt) : (previous?.startedAt ?? started),
        });
      }
      for (const [taskId, candidate] of this.candidates) {
        // Visibility is the truth, except for hints younger than its lag.
        if (!listed.has(taskId) && !(candidate.hintedAt && started - candidate.hintedAt < HINT_TTL_MS)) this.candidates.delete(taskId);
      }
    } catch (error) {
      if (Date.now() - this.lastErrorLog > 10_000) {
        this.lastErrorLog = Date.now();
        this.options.log.warn({ err: error }, 'dequeue watcher could not list claimable tasks');
      }
    }
    for (const waiter of this.waiters) if (waiter.addedAt <= started) waiter.sawRefresh = true;
    for (const [taskId, until] of this.suppressed) if (until <= Date.now()) this.suppressed.delete(taskId);
    this.lastRefresh = Date.now();
  }

  /** Pairs claimable candidates (oldest first) with waiting agents (longest waiting first). */
  private match(): void {
    const now = Date.now();
    const ordered = [...this.candidates.values()].sort((a, b) => a.startedAt - b.startedAt);
    for (const candidate of ordered) {
      if (this.claiming.has(candidate.taskId)) continue;
      const until = this.suppressed.get(candidate.taskId);
      if (until !== undefined && until > now) continue;
      const waiter = this.waiters.find(
        (w) =>
          w.state === 'waiting' &&
          w.agent.types.includes(candidate.agentType) &&
          (!candidate.assignee || candidate.assignee === w.agent.id) &&
          !w.excluded.has(candidate.taskId),
      );
      if (!waiter) continue;
      const claim = this.claim(waiter, candidate);
      this.inflight.add(claim);
      void claim.finally(() => this.inflight.delete(claim));
    }
  }

  private expire(): void {
    const now = Date.now();
    for (const waiter of [...this.waiters]) {
      if (waiter.state === 'waiting' && waiter.sawRefresh && now >= waiter.deadline) waiter.resolve({ kind: 'timeout' });
    }
  }

  private async claim(waiter: Waiter, candidate: Candidate): Promise<void> {
    waiter.state = 'claiming';
    this.claiming.add(candidate.taskId);
    try {
      const grant = await this.options.tasks.claim(candidate.taskId, { kind: 'agent', id: waiter.agent.id, types: waiter.agent.types });
      this.options.metrics?.claimWon();
      this.candidates.delete(candidate.taskId);
      if (this.options.afterClaim) await this.options.afterClaim(grant, waiter.agent).catch(() => undefined);
      if (waiter.abandoned) {
        waiter.state = 'done';
        this.remove(waiter);
        await this.giveBack(grant, waiter.agent);
        return;
      }
      waiter.state = 'waiting'; // so that resolve() takes it
      waiter.resolve({ kind: 'task', grant });
    } catch (error) {
      if (error instanceof TaskError) {
        this.options.metrics?.claimLost(error.code);
        if (error.code === 'reserved_for_other' || error.code === 'wrong_agent_type') waiter.excluded.add(candidate.taskId);
        else {
          this.candidates.delete(candidate.taskId);
          this.suppressed.set(candidate.taskId, Date.now() + SUPPRESS_MS);
        }
      } else {
        this.suppressed.set(candidate.taskId, Date.now() + SUPPRESS_MS);
        if (Date.now() - this.lastErrorLog > 10_000) {
          this.lastErrorLog = Date.now();
          this.options.log.warn({ err: error, taskId: candidate.taskId }, 'claim failed');
        }
      }
      if (waiter.state === 'claiming') {
        if (waiter.abandoned) waiter.resolve({ kind: 'aborted' });
        else if (this.closed) waiter.resolve({ kind: 'shutdown' });
        else waiter.state = 'waiting';
      }
    } finally {
      this.claiming.delete(candidate.taskId);
      if (!this.closed) this.ensureLoop();
    }
  }
}
