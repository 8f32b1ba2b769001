// Task counts by state × agent type × mode, for GET /api/v1/stats: read from the task tally
// workflows (src/workflows/task-tally.ts) with one query to each, no visibility call. Visibility
// is counted only to seed a tally where there is none yet, and by the stats when the tallies
// cannot answer.
import { AsyncLocalStorage } from 'node:async_hooks';
import { WorkflowExecutionAlreadyStartedError, WorkflowNotFoundError, type Client } from '@temporalio/client';
import { EXECUTION_MODES, TASK_STATES } from './model';
import { BOOKKEEPING_START } from './workflows/priority';
import type { TaskClient } from './task-client';
import { closedNotCounted, isOpenState, placeKey, sumCounts, TASK_TALLY_SHARDS, tallyShardOf, TaskTallyBook, type TaskCount, type TaskTallyState, type TaskTell } from './workflows/task-tally-book';
import { TASK_TALLY_WORKFLOW_TYPE, taskCountsQuery, taskTallyWorkflowId, tellTaskTransitionsUpdate, type taskTallyWorkflow } from './workflows/task-tally';

/**
 * Sends the tellTaskTally activities' tells (src/activities/report.ts) to the tallies, each tally's
 * in batches: one Update in flight per tally from each worker's client, carrying every tell that came in
 * while the one before was on its way. The server allows ten Updates in flight per workflow and
 * takes each in a workflow task of the tally: one Update per tell met that limit as soon as a
 * backlog of new tasks was told (10,000 pending on the cluster tier), and every refused Update
 * was sent again. An Update, not a signal: the server refuses a run's continue-as-new while a
 * signal that came in meanwhile waits (UNHANDLED_COMMAND, and the worker then replays the whole
 * history); under a steady stream of tells it refused every try for minutes. An Update that
 * reaches a tally as it continues-as-new is refused with a retryable error, and the client sends
 * it to the next run.
 */
export class TaskTallyTeller {
  private readonly queues = new Map<number, TellQueue>();
  /** Batches go out in the context this teller was made in, never the context of the tell that started them (its activity's). */
  private readonly outsideCallers = AsyncLocalStorage.snapshot();

  constructor(
    private readonly client: Client,
    private readonly options: { maxBatch?: number; updateTimeoutMs?: number } = {},
  ) {}

  /**
   * Resolves once the tally has taken the tell, or there is no tally (nobody has asked for the
   * stats yet, or it was terminated): nothing to tell, never the task's concern. A tell whose
   * `signal` aborts before it is sent (its activity timed out or was cancelled) is not sent: its
   * activity's next try tells it, and this one, sent later, could land in a tally run that no
   * longer knows its id, and count a closed task again.
   */
  tell(tell: TaskTell, signal?: AbortSignal): Promise<void> {
    const shard = tallyShardOf(tell.transition.taskId);
    const queue = this.queues.get(shard) ?? { waiting: [], sending: false };
    this.queues.set(shard, queue);
    const told = new Promise<void>((resolve, reject) => {
      if (signal?.aborted) return reject(signal.reason);
      queue.waiting.push({ tell, signal, settle: (error) => (error === undefined ? resolve() : reject(error)) });
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
    if (!queue.sending) this.outsideCallers(() => void this.send(shard, queue));
    return told;
  }

  private async send(shard: number, queue: TellQueue): Promise<void> {
    queue.sending = true;
    while (queue.waiting.length > 0) {
      const batch = queue.waiting.splice(0, this.options.maxBatch ?? 500).filter((waiting) => !waiting.signal?.aborted);
      if (batch.length === 0) continue;
      let failure: unknown;
      try {
        // Bounded, within the activity's minute: a tally whose worker does not answer must not
        // hold the tells behind it for long. The client may retry within it for up to ~10 s more.
        await this.client.withDeadline(Date.now() + (this.options.updateTimeoutMs ?? 20_000), () =>
          this.client.workflow.getHandle(taskTallyWorkflowId(shard)).executeUpdate(tellTaskTransitionsUpdate, { args: [batch.map((w) => w.tell)] }),
        );
      } catch (error) {
        if (!(error instanceof WorkflowNotFoundError)) failure = error;
      }
      for (const waiting of batch) waiting.settle(failure);
    }
    queue.sending = false;
  }
}

interface TellQueue {
  waiting: Array<{ tell: TaskTell; signal?: AbortSignal; settle: (error?: unknown) => void }>;
  sending: boolean;
}

/** One teller per client (a worker's renewal brings a new one; the old one's batches finish). */
const tellers = new WeakMap<Client, TaskTallyTeller>();
export function taskTallyTellerFor(client: Client): TaskTallyTeller {
  let teller = tellers.get(client);
  if (!teller) tellers.set(client, (teller = new TaskTallyTeller(client)));
  return teller;
}

/** Runs `work` over `items`, at most `concurrency` at once. */
async function pool<I>(items: I[], concurrency: number, work: (item: I) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

/**
 * Counts tasks from Temporal visibility, the expensive way. Visibility cannot group by custom
 * search attributes: open tasks are listed (there are few), closed ones counted per closed state ×
 * configured type × mode — 1 + 9 × types calls, seconds on a production namespace (about 10
 * visibility calls a second). Closed tasks of types no longer configured are not counted.
 */
export async function countTasksFromVisibility(tasks: TaskClient, types: readonly string[]): Promise<TaskTallyState> {
  const closedStates = TASK_STATES.filter((state) => !isOpenState(state));
  const combos = types.flatMap((type) => closedStates.flatMap((state) => EXECUTION_MODES.map((mode) => ({ type, state, mode }))));
  const closed = new Map<string, number>();
  const [open] = await Promise.all([
    tasks.list({ openOnly: true }, 100_000),
    pool(combos, 16, async ({ type, state, mode }) => {
      const count = await tasks.count({ state, mode, agentType: type });
      if (count > 0) closed.set(placeKey({ state, type, mode }), count);
    }),
  ]);
  const openTasks = new Map<string, string>();
  for (const task of open) {
    // A workflow still open but already closed in state is finishing its reports: counted above.
    if (task.state && isOpenState(task.state)) openTasks.set(task.taskId, placeKey({ state: task.state, type: task.agentType ?? '', mode: task.mode ?? '' }));
  }
  return { open: Object.fromEntries(openTasks), closed: Object.fromEntries(closed) };
}

/** The little of a logger this needs (pino and Fastify's logger both fit). */
interface InfoLogger {
  info(obj: object, msg: string): void;
}

export interface TaskTallyReaderOptions {
  client: Client;
  tasks: TaskClient;
  /** The configured agent types: what seeding counts closed tasks of. */
  types: readonly string[];
  /**
   * How long a query may take. A tally that does not answer in time (its workflow task queued
   * behind others on a loaded worker) is read from its last answer, if that is at most
   * `lastAnswerForMs` old; otherwise, or when no tally answers, the read fails (the stats then
   * count from visibility).
   */
  queryTimeoutMs?: number;
  /** How old a tally's last answer may be to stand in for one that did not come in time. */
  lastAnswerForMs?: number;
  /** How often to check that the tallies still run (describes, not visibility calls). */
  checkEveryMs?: number;
  log?: InfoLogger;
}

const SHARDS = Array.from({ length: TASK_TALLY_SHARDS }, (_, shard) => shard);

/** A tally's counts, that it is not there, or that it did not answer. */
type ShardRead = { shard: number; counts: TaskCount[] } | { shard: number; missing: true } | { shard: number; failed: unknown };

/**
 * Reads the task tallies: one query to each shard, summed. Where one is missing (a new deployment,
 * one from before the shards, or an operator terminated it), the first reader counts from
 * visibility and starts it with its share. Many API processes may find it missing at once: the
 * workflow id decides — the one whose start succeeds seeded it, the others query it. Concurrent
 * reads share one answer.
 */
export class TaskTallyReader {
  private inFlight: Promise<TaskCount[]> | undefined;
  private checkedAt = -Infinity;
  /** Each tally's last answer. */
  private readonly lastAnswers = new Map<number, { counts: TaskCount[]; at: number }>();

  constructor(private readonly options: TaskTallyReaderOptions) {}

  read(): Promise<TaskCount[]> {
    if (!this.inFlight) {
      this.inFlight = this.load().finally(() => {
        this.inFlight = undefined;
      });
    }
    return this.inFlight;
  }

  private async load(): Promise<TaskCount[]> {
    // A tally that has ended (an operator terminated it) takes no more tells: now and then, make
    // sure each runs, and start a new one where not. A describe reads the workflow's own record.
    // Between checks a terminated tally still answers (a closed run answers queries) with its last counts.
    const checking = Date.now() - this.checkedAt >= (this.options.checkEveryMs ?? 60_000);
    const reads = await Promise.all(SHARDS.map((shard) => (checking ? this.readChecked(shard) : this.readShard(shard))));
    const failed = reads.filter((read) => 'failed' in read);
    let counts: TaskCount[];
    if (failed.length > 0) counts = this.withLastAnswers(reads, failed);
    else if (reads.some((read) => 'missing' in read)) counts = await this.seed(reads);
    else counts = sumCounts(reads.map((read) => ('counts' in read ? read.counts : [])));
    if (checking) this.checkedAt = Date.now(); // only once every tally runs
    return counts;
  }

  private async readChecked(shard: number): Promise<ShardRead> {
    try {
      const description = await this.options.client.workflow.getHandle(taskTallyWorkflowId(shard)).describe();
      if (description.status.name !== 'RUNNING') return { shard, missing: true };
    } catch (error) {
      if (error instanceof WorkflowNotFoundError) return { shard, missing: true };
      throw error;
    }
    return this.readShard(shard);
  }

  private async readShard(shard: number): Promise<ShardRead> {
    try {
      return { shard, counts: this.answered(shard, await this.query(shard)) };
    } catch (error) {
      if (error instanceof WorkflowNotFoundError) return { shard, missing: true };
      return { shard, failed: error };
    }
  }

  /** Keeps a tally's answer (what stands in for it if it does not answer later). */
  private answered(shard: number, counts: TaskCount[]): TaskCount[] {
    this.lastAnswers.set(shard, { counts, at: Date.now() });
    return counts;
  }

  /**
   * The counts where some tallies did not answer: theirs from their last answers (kept per
   * process), if recent. A read fails when none answered (no worker runs them, or every one is
   * stuck: the stats count from visibility), when one that did not has no recent answer, or when
   * one is also missing (seeding needs every other).
   */
  private withLastAnswers(reads: ShardRead[], failed: ShardRead[]): TaskCount[] {
    const now = Date.now();
    const error = (failed[0] as { failed: unknown }).failed;
    if (failed.length === reads.length || reads.some((read) => 'missing' in read)) throw error;
    const standIns = failed.map((read) => ({ shard: read.shard, last: this.lastAnswers.get(read.shard) }));
    if (standIns.some(({ last }) => !last || now - last.at > (this.options.lastAnswerForMs ?? 30_000))) throw error;
    this.options.log?.info({ shards: standIns.map(({ shard, last }) => ({ shard, ageMs: now - last!.at })), err: error }, 'a task tally did not answer: its last answer stands in');
    return sumCounts(reads.map((read) => ('counts' in read ? read.counts : this.lastAnswers.get(read.shard)!.counts)));
  }

  private query(shard: number): Promise<TaskCount[]> {
    const { client } = this.options;
    return client.withDeadline(Date.now() + (this.options.queryTimeoutMs ?? 2_000), () => client.workflow.getHandle(taskTallyWorkflowId(shard)).query(taskCountsQuery));
  }

  /** A query to a tally another process has just started: it answers once its first workflow task has run. */
  private async queryJustStarted(shard: number): Promise<TaskCount[]> {
    for (let tries = 1; ; tries++) {
      try {
        return await this.query(shard);
      } catch (error) {
        if (tries >= 5) throw error;
        await new Promise((resolve) => setTimeout(resolve, 200));
      }
    }
  }

  /**
   * Counts from visibility, then starts each missing tally with its share: the open tasks whose
   * ids fall to it, and (the first missing one) the closed tasks the running tallies do not
   * count. A task that moves between the count and the start is a small, known inaccuracy: its
   * tell finds no tally. One that moved between open states stays where the count saw it until
   * its next move; one created meanwhile is not counted until its next move; one that closed
   * meanwhile stays counted open for good; one that closed in a running tally meanwhile may be
   * missed by the count (visibility lags a little), never counted twice. Seeding happens once per
   * tally, and the window is the few seconds the count takes. At most 100,000 open tasks are listed.
   */
  private async seed(reads: ShardRead[]): Promise<TaskCount[]> {
    const { client, tasks, types, log } = this.options;
    const state = await countTasksFromVisibility(tasks, types);
    // Read after the count: what closed meanwhile in a running tally is then not given to a new one too.
    const running = await Promise.all(reads.flatMap((read) => ('counts' in read ? [this.query(read.shard).then((counts) => this.answered(read.shard, counts))] : [])));
    const missing = reads.filter((read) => 'missing' in read).map((read) => read.shard);
    const closedElsewhere = closedNotCounted(state.closed, sumCounts(running));
    const counted = await Promise.all(
      missing.map(async (shard, i) => {
        const share: TaskTallyState = {
          open: Object.fromEntries(Object.entries(state.open).filter(([taskId]) => tallyShardOf(taskId) === shard)),
          closed: i === 0 ? closedElsewhere : {},
        };
        try {
          await client.workflow.start<typeof taskTallyWorkflow>(TASK_TALLY_WORKFLOW_TYPE, {
            workflowId: taskTallyWorkflowId(shard),
            ...BOOKKEEPING_START,
            args: [{ state: share }],
            // The default conflict policy: a running tally makes this start fail, so only one seeds.
            staticSummary: `Drover task tally ${shard + 1} of ${TASK_TALLY_SHARDS}: tasks by state, agent type and mode, for the stats`,
          });
        } catch (error) {
          if (!(error instanceof WorkflowExecutionAlreadyStartedError)) throw error;
          // Another process seeded it first: its counts stand, once its first workflow task has run.
          return this.answered(shard, await this.queryJustStarted(shard));
        }
        log?.info({ shard, openTasks: Object.keys(share.open).length }, 'started a task tally, seeded from visibility');
        return this.answered(shard, new TaskTallyBook(share).counts());
      }),
    );
    return sumCounts([...running, ...counted]);
  }
}
