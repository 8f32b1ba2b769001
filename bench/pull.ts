// Pull agents matched through Temporal's task queues (src/api/pull-matcher.ts), called by
// bench/run.ts: two API processes (buildApp twice, on 127.0.0.1) and agents over real HTTP. Each
// task keeps an offer on `drover.pull.<type>`; an API process polls it only while one of its
// agents waits there. For each backlog size N in BENCH_BACKLOGS, with N tasks pending in one
// type's queue (one repository, priority 5, numbers 1..N):
//   1. FIFO: one agent on the OTHER API process dequeues the first 100 (completing each); the share
//      that came out oldest first. The 100 oldest are made one at a time, each once its offer is
//      queued, so their order is known; the rest 32 at a time. With N = 0: 100 tasks made one at a time.
//   2. Priority through the backlog: a priority-1 task enqueued (API process one) behind the
//      priority-5 backlog of the same type and repository; once its offer is scheduled (half the
//      samples: BENCH_PULL_SETTLE_MS later, by when it has surely reached matching), one dequeue on
//      process two. Whether it came first, and how long that dequeue took.
//   3. Enqueue → dequeue across processes: an agent waits on process two; a task is enqueued on
//      process one. An agent cannot wait on a queue holding a backlog it may take (it would take
//      the backlog at once), so this agent's type has a queue of its own, empty, while the N tasks
//      sit pending beside it on the same server. The trivial round trip is measured beside it, one
//      after each settled sample.
//      As the round trip is (one workflow at a time, each closed before the next), half the samples
//      start once the task before has closed; the other half back to back, with its completion
//      still in flight.
//   4. Burst: 8 agents waiting (4 per process), BENCH_PULL_BURST tasks enqueued 32 at a time; the
//      longest enqueue → dequeue, and the longest dequeue call that began with tasks pending.
//   5. Drain: 8 agents (4 per process) dequeue and complete the backlog, at most BENCH_PULL_DRAIN_CAP
//      tasks (2,000 by default: the 10,000 backlog is not drained whole, to bound the time).
// Before 1, GET /api/v1/stats BENCH_PULL_STATS_SAMPLES (20) times with the backlog pending.
// The backlog left is then terminated. Once, first: fairness, a repository with
// BENCH_PULL_FAIRNESS pending tasks and another with one made after them (same type, priority).
//   BENCH_BACKLOGS (default 0,1000,10000), BENCH_PULL_SAMPLES (100), BENCH_PULL_PRIORITY_SAMPLES (50),
//   BENCH_PULL_BURST (2000), BENCH_PULL_DRAIN_CAP (2000), BENCH_PULL_FAIRNESS (1000), BENCH_PULL_CONCURRENCY (32),
//   BENCH_PULL_SETTLE_MS (250). With the defaults, 0,1000 takes about 17 minutes here; 10,000 adds
//   about 9 minutes of task creation alone.
import protos from '@temporalio/proto';
import type { AddressInfo } from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { buildApp } from '../src/api/app';
import { parseConfig, taskDefaults } from '../src/config';
import { taskId as makeTaskId } from '../src/names';
import type { BenchContext } from './context';
import { pool, round, summarize, type Summary } from './stats';

const BACKLOGS = (process.env.BENCH_BACKLOGS ?? '0,1000,10000').split(',').map((n) => Number(n.trim()));
const SAMPLES = Number(process.env.BENCH_PULL_SAMPLES ?? 100);
const PRIORITY_SAMPLES = Number(process.env.BENCH_PULL_PRIORITY_SAMPLES ?? 50);
const BURST = Number(process.env.BENCH_PULL_BURST ?? 2000);
const DRAIN_CAP = Number(process.env.BENCH_PULL_DRAIN_CAP ?? 2000);
const FAIRNESS = Number(process.env.BENCH_PULL_FAIRNESS ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_PULL_CONCURRENCY ?? 32);
const FIFO_COUNT = 100;
const STATS_SAMPLES = Number(process.env.BENCH_PULL_STATS_SAMPLES ?? 20);
/** How long after its offer is scheduled a priority-1 task is surely in matching. */
const SETTLE_MS = Number(process.env.BENCH_PULL_SETTLE_MS ?? 250);
const AGENTS = 8;
/**
 * Opt-in diagnostic: the cross-process sample again, each one this many ms after the task before
 * closed (e.g. `0,200,1000`), with where the time went, read from the task's own history.
 */
const SETTLE_SWEEP = (process.env.BENCH_PULL_SETTLE_SWEEP ?? '').split(',').filter(Boolean).map(Number);
const SWEEP_SAMPLES = Number(process.env.BENCH_PULL_SWEEP_SAMPLES ?? 20);
/** `close`: the settle time runs from the task before closing; `poll`: from the agent's poll being registered. */
const SWEEP_FROM = process.env.BENCH_PULL_SWEEP_FROM === 'poll' ? 'poll' : 'close';
const BACKLOG_PRIORITY = 5;
const ADMIN = 'bench-admin-token';
/** Long enough that no task leaves its SSH phase (there are no SSH hosts) while the benchmark runs. */
const MATCH_WINDOW_MS = 3_600_000;

interface Agent {
  id: string;
  token: string;
  auth: { authorization: string };
}

interface Grant {
  task_id: string;
  attempt: number;
}

interface Dequeued {
  grant?: Grant;
  /** When the call was sent and when its answer came (performance.now()). */
  sentAt: number;
  at: number;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** `work`, or an error after `ms`. */
async function within<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([work, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(message)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}
const seconds = (ms: number) => round(ms / 1000, 2);

function makeAgents(type: string): Agent[] {
  return Array.from({ length: AGENTS }, (_, i) => {
    const token = `${type}-token-${i}-0123456789`;
    return { id: `${type}-agent-${i}`, token, auth: { authorization: `Bearer ${token}` } };
  });
}

/** True when a poll was aborted on purpose (the end of a phase). */
const isAbort = (error: unknown) => error instanceof Error && (error.name === 'AbortError' || error.name === 'TimeoutError');

export async function benchPull(ctx: BenchContext): Promise<Record<string, unknown>> {
  const stamp = Date.now().toString(36);
  // Per backlog size, fresh queues: one for the backlog, one where agents wait (latency, burst).
  const plans = BACKLOGS.map((n, i) => ({ n, backlogType: `pb${i}${stamp}`, waitType: `pw${i}${stamp}` }));
  const fairType = `pf${stamp}`;
  const agentsOf = new Map<string, Agent[]>();
  for (const type of [...plans.flatMap((p) => [p.backlogType, p.waitType]), fairType]) agentsOf.set(type, makeAgents(type));
  const config = parseConfig(
    {
      temporal: { address: ctx.address, namespace: 'default' },
      api: { adminToken: ADMIN, maxDequeueWait: '60s' },
      webhook: { secret: 'bench-webhook-secret', mergeType: fairType },
      types: [...agentsOf.keys()],
      tasks: { matchWindow: `${MATCH_WINDOW_MS}ms` },
      agents: [...agentsOf].flatMap(([type, agents]) => agents.map((a) => ({ id: a.id, token: a.token, types: [type] }))),
    },
    {},
  );
  const options = { ...taskDefaults(config), matchWindowMs: MATCH_WINDOW_MS };
  const one = await buildApp({ config, client: ctx.client, logger: false });
  const two = await buildApp({ config, client: ctx.client, logger: false });
  const urls: string[] = [];
  for (const app of [one, two]) {
    await app.listen({ host: '127.0.0.1', port: 0 });
    urls.push(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`);
  }
  const [oneUrl, twoUrl] = urls as [string, string];
  const adminAuth = { authorization: `Bearer ${ADMIN}`, 'content-type': 'application/json' };

  // ---- HTTP and Temporal helpers ---------------------------------------------------------------

  async function dequeue(url: string, agent: Agent, waitS: number, signal?: AbortSignal): Promise<Dequeued> {
    const sentAt = performance.now();
    const res = await fetch(`${url}/api/v1/tasks/dequeue?agent_id=${agent.id}&wait=${waitS}`, { headers: agent.auth, signal });
    const at = performance.now();
    if (res.status === 200) return { grant: (await res.json()) as Grant, sentAt, at };
    const text = await res.text();
    if (res.status !== 204) throw new Error(`dequeue answered ${res.status}: ${text}`);
    return { sentAt, at };
  }

  async function complete(url: string, agent: Agent, grant: Grant): Promise<void> {
    const res = await fetch(`${url}/api/v1/tasks/${encodeURIComponent(grant.task_id)}/complete`, {
      method: 'POST',
      headers: { ...agent.auth, 'content-type': 'application/json' },
      body: JSON.stringify({ agent_id: agent.id, attempt: grant.attempt, summary: 'bench' }),
    });
    if (res.status !== 200) throw new Error(`complete of ${grant.task_id} answered ${res.status}: ${await res.text()}`);
    await res.arrayBuffer();
  }

  /** The admin's enqueue on API process one. */
  async function enqueue(body: Record<string, unknown>): Promise<string> {
    const res = await fetch(`${oneUrl}/api/v1/tasks`, { method: 'POST', headers: adminAuth, body: JSON.stringify({ kind: 'implement', prompt: 'p', options: { match_window_ms: MATCH_WINDOW_MS }, ...body }) });
    if (res.status !== 201) throw new Error(`enqueue answered ${res.status}: ${await res.text()}`);
    return ((await res.json()) as { task_id: string }).task_id;
  }

  /** Resolves once the task's offer is on its queue (its activity scheduled). */
  async function offered(taskId: string): Promise<void> {
    const deadline = Date.now() + 120_000;
    for (;;) {
      const description = await ctx.client.workflow.getHandle(taskId).describe();
      if (description.raw.pendingActivities?.some((a) => a.activityType?.name === 'offerTask')) return;
      if (Date.now() > deadline) throw new Error(`no offer for ${taskId} after 120 s`);
      await sleep(20);
    }
  }

  /** Starts a task directly (as the API does). */
  async function startTask(type: string, repo: string, number: number, priority: number): Promise<string> {
    const { taskId } = await ctx.tasks.start({ agentType: type, kind: 'implement', repo, number, title: `bench ${number}`, prompt: 'p', priority, options });
    return taskId;
  }

  /** Starts a task and waits for its offer: tasks made so, one after another, are offered in that order. */
  async function makeTask(type: string, repo: string, number: number, priority: number): Promise<string> {
    const taskId = await startTask(type, repo, number, priority);
    await offered(taskId);
    return taskId;
  }

  /**
   * Starts tasks `numbers` CONCURRENCY at a time, then waits until every one has its offer (checking
   * afterwards, not while starting, keeps the describe calls from slowing the starts).
   */
  async function makeMany(type: string, repo: string, numbers: number[], priority: number, onMade: (taskId: string, number: number) => void): Promise<void> {
    const made: Array<[string, number]> = [];
    await pool(numbers, CONCURRENCY, async (number) => {
      made.push([await startTask(type, repo, number, priority), number]);
    });
    await pool(made, CONCURRENCY, async ([taskId, number]) => {
      await offered(taskId);
      onMade(taskId, number);
    });
  }

  async function metric(url: string, name: string): Promise<number> {
    const text = await (await fetch(`${url}/metrics`)).text();
    return Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
  }
  const waitingOn = (url: string) => metric(url, 'drover_dequeue_waiting');
  const offersReturned = async () => (await metric(oneUrl, 'drover_offers_returned_total')) + (await metric(twoUrl, 'drover_offers_returned_total'));
  async function untilWaiting(count: number): Promise<void> {
    const deadline = Date.now() + 60_000;
    while ((await waitingOn(oneUrl)) + (await waitingOn(twoUrl)) < count) {
      if (Date.now() > deadline) throw new Error(`fewer than ${count} agents waiting after 60 s`);
      await sleep(5);
    }
  }

  /**
   * Where one cross-process sample's time goes, from the task's history (event times, the same
   * machine's clock): enqueue → workflow started → first workflow task picked up → done → offer
   * started → the claim's workflow task scheduled → picked up → claim accepted → grant received.
   */
  async function phasesOf(taskId: string, sentAtMs: number, receivedAtMs: number): Promise<Record<string, number>> {
    const events = (await ctx.client.workflow.getHandle(taskId).fetchHistory()).events ?? [];
    const time = (e: (typeof events)[number]) => Number(e.eventTime?.seconds ?? 0) * 1000 + Math.round((e.eventTime?.nanos ?? 0) / 1e6);
    const type = protos.temporal.api.enums.v1.EventType;
    const started = events.find((e) => e.eventType === type.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED);
    const firstPicked = events.find((e) => e.eventType === type.EVENT_TYPE_WORKFLOW_TASK_STARTED);
    const firstDone = events.find((e) => e.eventType === type.EVENT_TYPE_WORKFLOW_TASK_COMPLETED);
    const offerScheduled = events.find((e) => e.eventType === type.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED && e.activityTaskScheduledEventAttributes?.activityType?.name === 'offerTask');
    const offerStarted = events.find((e) => e.eventType === type.EVENT_TYPE_ACTIVITY_TASK_STARTED && String(e.activityTaskStartedEventAttributes?.scheduledEventId) === String(offerScheduled?.eventId));
    const accepted = events.find((e) => e.eventType === type.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED);
    // The workflow task that took the claim: the last one scheduled and picked up before it.
    const before = (eventType: number) => events.filter((e) => e.eventType === eventType && Number(e.eventId) < Number(accepted?.eventId ?? 0)).at(-1);
    const claimScheduled = before(type.EVENT_TYPE_WORKFLOW_TASK_SCHEDULED);
    const claimPicked = before(type.EVENT_TYPE_WORKFLOW_TASK_STARTED);
    const marks = [sentAtMs, started, firstPicked, firstDone, offerStarted, claimScheduled, claimPicked, accepted].map((m) => (typeof m === 'number' ? m : m ? time(m) : NaN));
    const names = [
      'enqueue → started',
      'started → first workflow task picked up',
      '→ first workflow task done',
      '→ offer started',
      '→ claim workflow task scheduled',
      '→ claim workflow task picked up',
      '→ claim accepted',
    ];
    return {
      ...Object.fromEntries(names.map((name, i) => [name, marks[i + 1]! - marks[i]!])),
      'claim accepted → grant received': receivedAtMs - marks[7]!,
    };
  }

  /**
   * One cross-process sample: `waiter` polls process two, the task is enqueued on process one once
   * it waits (and `beforeEnqueue` has run), and the waiter must get that task. Enqueue → grant, ms.
   */
  async function crossSample(waiter: Agent, body: Record<string, unknown>, beforeEnqueue?: () => Promise<void>): Promise<{ id: string; grant: Grant; sentAtMs: number; ms: number }> {
    const polling = dequeue(twoUrl, waiter, 30);
    await untilWaiting(1);
    await beforeEnqueue?.();
    const sentAtMs = Date.now();
    const t0 = performance.now();
    const id = await enqueue(body);
    const { grant, at } = await polling;
    if (grant?.task_id !== id) throw new Error(`the waiting agent got ${grant?.task_id ?? 'nothing'} instead of ${id}`);
    return { id, grant, sentAtMs, ms: at - t0 };
  }

  async function settleSweep(waiter: Agent, waitType: string, repo: string): Promise<Record<string, unknown>> {
    const out: Record<string, unknown> = {};
    let number = 0;
    for (const settleMs of SETTLE_SWEEP) {
      const samples: Array<{ ms: number; phases: Record<string, number> }> = [];
      // This process runs both API processes, the worker's workflow code and the bench: its event loop is shared.
      const loop = monitorEventLoopDelay({ resolution: 5 });
      loop.enable();
      for (let i = 0; i < SWEEP_SAMPLES; i++) {
        if (SWEEP_FROM === 'close') await sleep(settleMs);
        const body = { agent_type: waitType, repo, number: (number += 1), title: `settle ${settleMs} ${i}` };
        const { id, grant, sentAtMs, ms } = await crossSample(waiter, body, SWEEP_FROM === 'poll' ? () => sleep(settleMs) : undefined);
        await complete(twoUrl, waiter, grant);
        await ctx.client.workflow.getHandle(id).result();
        samples.push({ ms, phases: await phasesOf(id, sentAtMs, sentAtMs + ms) });
      }
      loop.disable();
      const latency = summarize(samples.map((s) => s.ms));
      const phaseP50s = Object.fromEntries(Object.keys(samples[0]!.phases).map((name) => [name, summarize(samples.map((s) => s.phases[name]!)).p50]));
      // Where the tail goes: the slowest sample's phases beside the p50s.
      const slowest = samples.reduce((a, b) => (b.ms > a.ms ? b : a));
      const loopDelay = [loop.percentile(50), loop.percentile(99), loop.max].map((ns) => round(ns / 1e6));
      out[`${settleMs} ms after`] = { 'enqueue → dequeue ms': latency, 'phase p50s ms': phaseP50s, 'slowest sample ms': { total: round(slowest.ms), ...slowest.phases }, 'event loop delay ms (p50, p99, max)': loopDelay };
      ctx.log(`pull: settle ${settleMs} ms: p50 ${latency.p50} ms; ${JSON.stringify(phaseP50s)}; slowest ${round(slowest.ms)} ms: ${JSON.stringify(slowest.phases)}; event loop delay ${JSON.stringify(loopDelay)}`);
    }
    return out;
  }

  async function stats(url: string): Promise<{ tasks: { by_state_type_mode: Array<{ state: string; type: string; count: number }> } }> {
    const res = await fetch(`${url}/api/v1/stats`, { headers: adminAuth });
    if (res.status !== 200) throw new Error(`stats answered ${res.status}: ${await res.text()}`);
    return (await res.json()) as Awaited<ReturnType<typeof stats>>;
  }

  /**
   * GET /api/v1/stats, STATS_SAMPLES calls, alternating the two API processes, each after the
   * endpoint's one-second cache has run out. Also the fewest of the backlog's tasks an answer
   * counted pending (a new task is told to its tally once pending for 2 s: waited for first).
   */
  async function statsLatency(type: string, pending: number): Promise<Record<string, unknown>> {
    const pendingOf = async (url: string) =>
      (await stats(url)).tasks.by_state_type_mode.filter((row) => row.type === type && row.state === 'pending').reduce((sum, row) => sum + row.count, 0);
    // Both processes have read the tallies once (their first read also checks that each runs).
    const deadline = Date.now() + 60_000;
    while (Math.min(await pendingOf(oneUrl), await pendingOf(twoUrl)) < pending) {
      if (Date.now() > deadline) {
        ctx.log(`pull: the stats did not count all ${pending} pending tasks within 60 s: timed anyway`);
        break;
      }
      await sleep(1_100);
    }
    const times: number[] = [];
    let counted = Infinity;
    for (let i = 0; i < STATS_SAMPLES; i++) {
      await sleep(1_100);
      const t0 = performance.now();
      counted = Math.min(counted, await pendingOf(i % 2 === 0 ? oneUrl : twoUrl));
      times.push(performance.now() - t0);
    }
    const latency = summarize(times);
    ctx.log(`pull: N=${pending}: GET /api/v1/stats p50 ${latency.p50} ms, p99 ${latency.p99} ms; counted at least ${counted} of the ${pending} pending`);
    return { 'ms (both API processes)': latency, [`the backlog counted pending, least of the answers (of ${pending})`]: counted };
  }

  /** Terminates the tasks of a phase left pending (nothing else would close them). */
  async function terminate(ids: Iterable<string>): Promise<number> {
    const left = [...ids];
    await pool(left, CONCURRENCY, async (id) => {
      await ctx.client.workflow
        .getHandle(id)
        .terminate('bench: backlog left over')
        .catch(() => undefined); // already closed
    });
    return left.length;
  }

  /** Dequeues one task after another with one agent, completing each. */
  async function takeInTurn(url: string, agent: Agent, count: number): Promise<Array<{ taskId: string; ms: number }>> {
    const taken: Array<{ taskId: string; ms: number }> = [];
    while (taken.length < count) {
      const { grant, sentAt, at } = await dequeue(url, agent, 30);
      if (!grant) throw new Error(`${agent.id} waited 30 s for nothing with ${count - taken.length} tasks to go`);
      taken.push({ taskId: grant.task_id, ms: at - sentAt });
      await complete(url, agent, grant);
    }
    return taken;
  }

  // ---- fairness: one repository with a backlog, another with one task ---------------------------

  async function fairness(): Promise<Record<string, unknown>> {
    const busy = `bench-pull/busy-${stamp}`;
    const quiet = `bench-pull/quiet-${stamp}`;
    const agent = agentsOf.get(fairType)![0]!;
    const open = new Set<string>();
    const started = performance.now();
    await makeMany(
      fairType,
      busy,
      Array.from({ length: FAIRNESS }, (_, i) => i + 1),
      BACKLOG_PRIORITY,
      (taskId) => open.add(taskId),
    );
    const single = await makeTask(fairType, quiet, 1, BACKLOG_PRIORITY);
    open.add(single);
    ctx.log(`pull: fairness: ${FAIRNESS} tasks of ${busy} and 1 of ${quiet} made in ${seconds(performance.now() - started)} s`);
    const taken = await takeInTurn(twoUrl, agent, 10);
    for (const { taskId } of taken) open.delete(taskId);
    const position = taken.findIndex((t) => t.taskId === single);
    await terminate(open);
    return {
      'pending: repository X, then one task of repository Y made after them (same type, priority 5)': `${FAIRNESS} : 1`,
      "position of Y's task among the first 10 dequeued (one agent, other API process)": position >= 0 ? position + 1 : 'not among them',
    };
  }

  // ---- one backlog size --------------------------------------------------------------------------

  async function backlog(plan: (typeof plans)[number]): Promise<Record<string, unknown>> {
    const { n, backlogType, waitType } = plan;
    const repo = `bench-pull/backlog-${n}-${stamp}`;
    const waitRepo = `bench-pull/wait-${n}-${stamp}`;
    const backlogAgents = agentsOf.get(backlogType)!;
    const waitAgents = agentsOf.get(waitType)!;
    const returnedAtStart = await offersReturned();
    const out: Record<string, unknown> = {};

    // The backlog: the oldest FIFO_COUNT one at a time (their order is known), the rest 32 at a time.
    const fifoCount = n === 0 ? FIFO_COUNT : Math.min(FIFO_COUNT, n);
    const numberOf = new Map<string, number>();
    const open = new Set<string>();
    let made = performance.now();
    for (let number = 1; number <= fifoCount; number++) {
      const id = await makeTask(backlogType, repo, number, BACKLOG_PRIORITY);
      numberOf.set(id, number);
      open.add(id);
    }
    const oneAtATimeMs = performance.now() - made;
    made = performance.now();
    await makeMany(
      backlogType,
      repo,
      Array.from({ length: Math.max(0, n - fifoCount) }, (_, i) => fifoCount + i + 1),
      BACKLOG_PRIORITY,
      (taskId, number) => {
        numberOf.set(taskId, number);
        open.add(taskId);
      },
    );
    const concurrentMs = performance.now() - made;
    ctx.log(`pull: N=${n}: ${fifoCount} tasks made one at a time in ${seconds(oneAtATimeMs)} s, ${Math.max(0, n - fifoCount)} more ${CONCURRENCY} at a time in ${seconds(concurrentMs)} s`);
    out['pending tasks (one type, one repository, priority 5)'] = n;
    out['made in s (one at a time until its offer is scheduled / the rest 32 at a time, then until every offer is)'] = `${seconds(oneAtATimeMs)} / ${seconds(concurrentMs)}`;

    // 0. GET /api/v1/stats with the backlog pending: its counts come from the task tallies.
    out['GET /api/v1/stats with the backlog pending'] = await statsLatency(backlogType, open.size);

    // 1. FIFO within the priority: the first 100 dequeued by one agent on the other process.
    const fifoAgent = backlogAgents[0]!;
    const fifoStarted = performance.now();
    const fifo = await takeInTurn(twoUrl, fifoAgent, fifoCount);
    const fifoMs = performance.now() - fifoStarted;
    const dequeuedNumbers = new Set<number>();
    let oldest = 1; // the oldest task not yet dequeued
    let inOrder = 0;
    const order: number[] = [];
    for (const { taskId } of fifo) {
      open.delete(taskId);
      const number = numberOf.get(taskId) ?? -1;
      order.push(number);
      if (number === oldest) inOrder += 1;
      dequeuedNumbers.add(number);
      while (dequeuedNumbers.has(oldest)) oldest += 1;
    }
    const outOfOrder = order.map((number, i) => ({ position: i + 1, number })).filter(({ number }, i) => number !== i + 1);
    out[`FIFO: oldest-first share of the first ${fifoCount} dequeued (one agent, other API process)`] = round(inOrder / fifoCount, 3);
    out['FIFO: first 10 dequeued (task numbers)'] = order.slice(0, 10);
    if (outOfOrder.length > 0) out['FIFO: positions not holding the task of that number (first 10)'] = outOfOrder.slice(0, 10);
    out['first dequeue ms (the process starts polling the agent’s queues)'] = round(fifo[0]!.ms);
    out['dequeue ms with the offers already queued, one agent, first left out'] = summarize(fifo.slice(1).map((t) => t.ms));
    out['tasks/s, that one agent (dequeue → complete, one after another)'] = round(fifoCount / (fifoMs / 1000));
    ctx.log(`pull: N=${n}: FIFO share ${round(inOrder / fifoCount, 3)}`);

    // 2. A priority-1 task behind the priority-5 backlog of the same type and repository. Its offer
    // is scheduled in the workflow before it reaches matching (through the history's transfer
    // queue): every other sample waits SETTLE_MS more before the dequeue.
    const first: number[] = [];
    const servedFirst = { now: 0, settled: 0 };
    for (let i = 0; i < PRIORITY_SAMPLES; i++) {
      const settle = i % 2 === 1;
      const id = await enqueue({ agent_type: backlogType, repo, number: 1_000_000 + i, title: `urgent ${i}`, priority: 1 });
      await offered(id);
      if (settle) await sleep(SETTLE_MS);
      const answer = await dequeue(twoUrl, fifoAgent, 30);
      let grant = answer.grant;
      if (!grant) throw new Error(`no task for ${fifoAgent.id}`);
      if (grant.task_id === id) servedFirst[settle ? 'settled' : 'now'] += 1;
      first.push(answer.at - answer.sentAt);
      // Not served first: take tasks until it comes (the backlog's are counted as drained by it).
      for (let tries = 0; grant.task_id !== id && tries < 20; tries++) {
        await complete(twoUrl, fifoAgent, grant);
        open.delete(grant.task_id);
        ({ grant } = await dequeue(twoUrl, fifoAgent, 30));
        if (!grant) throw new Error(`no task for ${fifoAgent.id}`);
      }
      await complete(twoUrl, fifoAgent, grant);
      open.delete(grant.task_id);
    }
    const halves = { now: Math.ceil(PRIORITY_SAMPLES / 2), settled: Math.floor(PRIORITY_SAMPLES / 2) };
    out[`priority 1 behind the backlog: served first, dequeue as soon as its offer is scheduled (share of ${halves.now})`] = round(servedFirst.now / halves.now, 3);
    out[`priority 1 behind the backlog: served first, dequeue ${SETTLE_MS} ms after (share of ${halves.settled})`] = round(servedFirst.settled / halves.settled, 3);
    out['priority 1 behind the backlog: dequeue ms, its offer queued, agent on the other API process'] = summarize(first);
    ctx.log(`pull: N=${n}: priority through the backlog done`);

    // 3. Enqueue (process one) → dequeue (agent waiting on process two), the backlog pending beside it.
    // Like the round trip it is compared with, a sample starts once the task before it has closed;
    // back to back, it also carries that task's completion (its Update, report and close) still in
    // flight on the same worker and server, measured too. The round trip is measured side by side:
    // one after each settled sample, so that both see the same moments of this shared machine.
    const waiter = waitAgents[0]!;
    const latencies: number[] = [];
    const backToBack: number[] = [];
    const warmUp: number[] = [];
    const roundTrips: number[] = [];
    /** After the 3 warm-up samples, every other one is settled. */
    const isSettled = (sample: number) => sample >= 3 && sample % 2 === 1;
    for (let i = 0; i < 2 * SAMPLES + 3; i++) {
      const settled = isSettled(i);
      const { id, grant, ms } = await crossSample(waiter, { agent_type: waitType, repo: waitRepo, number: i + 1, title: `wait ${i}` });
      (i < 3 ? warmUp : settled ? latencies : backToBack).push(ms);
      await complete(twoUrl, waiter, grant);
      if (isSettled(i + 1)) {
        await ctx.client.workflow.getHandle(id).result();
        roundTrips.push(await ctx.timeTrivialRoundTrip());
      }
    }
    const cross = summarize(latencies);
    const roundTrip = summarize(roundTrips);
    out['enqueue → dequeue ms, first 3 (warm-up, left out)'] = warmUp.map((ms) => round(ms));
    out['enqueue → dequeue ms, agent waiting on the other API process (its own queue; the backlog pending beside it)'] = cross;
    out['enqueue → dequeue ms, the same back to back (the task before still closing)'] = summarize(backToBack);
    out['trivial round trip ms, interleaved with the samples (one at a time)'] = roundTrip;
    out['ratio enqueue → dequeue p99 / round trip p99 (interleaved; at start of run)'] = [round(cross.p99 / roundTrip.p99, 2), round(cross.p99 / ctx.trivialRoundTrip.p99, 2)];
    out['ratio enqueue → dequeue p50 / round trip p50 (interleaved)'] = round(cross.p50 / roundTrip.p50, 2);
    ctx.log(`pull: N=${n}: cross-process p50 ${cross.p50} ms, p99 ${cross.p99} ms (round trip interleaved p50 ${roundTrip.p50} ms, p99 ${roundTrip.p99} ms)`);
    if (SETTLE_SWEEP.length > 0) out['settle sweep: enqueue → dequeue by time since the task before closed'] = await settleSweep(waiter, waitType, `${waitRepo}-settle`);

    // 4. A burst: 8 agents waiting (4 per process), BURST tasks enqueued 32 at a time.
    {
      const sentAt = new Map<string, number>();
      const dequeuedAt = new Map<string, number>();
      let acked = 0;
      let stop = false;
      const abort = new AbortController();
      /** Dequeue calls that began while tasks were already enqueued and not yet dequeued. */
      const withPending: number[] = [];
      const returning: number[] = [];
      const completing: number[] = [];
      let allDequeued!: () => void;
      const done = new Promise<void>((resolve) => (allDequeued = resolve));
      const runAgent = async (agent: Agent, url: string) => {
        while (!stop) {
          const pendingAtStart = acked - dequeuedAt.size;
          let answer: Dequeued;
          try {
            answer = await dequeue(url, agent, 30, abort.signal);
          } catch (error) {
            if (stop || isAbort(error)) return;
            throw error;
          }
          if (!answer.grant) continue;
          dequeuedAt.set(answer.grant.task_id, answer.at);
          returning.push(answer.at - answer.sentAt);
          if (pendingAtStart > 0) withPending.push(answer.at - answer.sentAt);
          const t0 = performance.now();
          await complete(url, agent, answer.grant);
          completing.push(performance.now() - t0);
          if (dequeuedAt.size >= BURST) allDequeued();
        }
      };
      const returnedBefore = await offersReturned();
      const agents = waitAgents.map((agent, i) => runAgent(agent, i < AGENTS / 2 ? oneUrl : twoUrl));
      await untilWaiting(AGENTS);
      const started = performance.now();
      let enqueuedMs = 0;
      try {
        await pool(
          Array.from({ length: BURST }, (_, i) => SAMPLES + 100 + i),
          CONCURRENCY,
          async (number) => {
            sentAt.set(makeTaskId('implement', waitRepo, number, waitType), performance.now());
            await enqueue({ agent_type: waitType, repo: waitRepo, number, title: `burst ${number}` });
            acked += 1;
          },
        );
        enqueuedMs = performance.now() - started;
        // An agent that fails ends the wait: agents end only once stopped.
        const failed = Promise.all(agents).then(() => Promise.reject(new Error('burst: the agents stopped')));
        await within(Promise.race([done, failed]), 15 * 60_000, `burst: ${dequeuedAt.size} of ${BURST} dequeued after 15 min`);
      } finally {
        stop = true;
        abort.abort();
        await Promise.allSettled(agents);
      }
      const totalMs = performance.now() - started;
      const burstLatency = [...dequeuedAt].map(([id, at]) => at - sentAt.get(id)!);
      const longestCall = summarize(withPending).max;
      out.burst = {
        tasks: BURST,
        'agents waiting (4 per API process)': AGENTS,
        'enqueued in s (admin API on process one, 32 at a time)': seconds(enqueuedMs),
        'all dequeued and completed in s': seconds(totalMs),
        'tasks/s (enqueue → dequeue → complete)': round(BURST / (totalMs / 1000)),
        'enqueue → dequeue ms': summarize(burstLatency),
        'longest enqueue → dequeue s': seconds(Math.max(...burstLatency)),
        'longest dequeue call that began with tasks pending, s': seconds(longestCall),
        'longest dequeue call that returned a task, s (includes waiting for enqueues)': seconds(summarize(returning).max),
        'dequeue calls begun with tasks pending, ms': summarize(withPending),
        'of those, longer than 5 s / than their wait (30 s)': `${withPending.filter((ms) => ms > 5_000).length} / ${withPending.filter((ms) => ms > 30_000).length}`,
        'complete ms': summarize(completing),
        'offers returned (polls that found their agent gone)': (await offersReturned()) - returnedBefore,
      };
      ctx.log(`pull: N=${n}: burst of ${BURST} in ${seconds(totalMs)} s, longest enqueue → dequeue ${seconds(Math.max(...burstLatency))} s`);
    }

    // 5. Drain the backlog with 8 agents, 4 per process.
    if (open.size > 0) {
      const target = Math.min(open.size, DRAIN_CAP);
      let drained = 0;
      let stop = false;
      const abort = new AbortController();
      let endedAt = 0;
      const dequeuing: number[] = [];
      const completing: number[] = [];
      const runAgent = async (agent: Agent, url: string) => {
        while (!stop) {
          let answer: Dequeued;
          try {
            answer = await dequeue(url, agent, 10, abort.signal);
          } catch (error) {
            if (stop || isAbort(error)) return;
            throw error;
          }
          if (!answer.grant) {
            if (drained >= target) return;
            continue;
          }
          dequeuing.push(answer.at - answer.sentAt);
          const t0 = performance.now();
          await complete(url, agent, answer.grant);
          completing.push(performance.now() - t0);
          open.delete(answer.grant.task_id);
          drained += 1;
          if (drained === target) {
            endedAt = performance.now();
            stop = true;
            abort.abort();
          }
        }
      };
      const started = performance.now();
      const agents = backlogAgents.map((agent, i) =>
        runAgent(agent, i < AGENTS / 2 ? oneUrl : twoUrl).catch((error: unknown) => {
          stop = true;
          abort.abort();
          throw error;
        }),
      );
      try {
        await within(Promise.all(agents), 15 * 60_000, `drain: ${drained} of ${target} after 15 min`);
      } finally {
        stop = true;
        abort.abort();
        await Promise.allSettled(agents);
      }
      const ms = (endedAt || performance.now()) - started;
      out.drain = {
        'pending at start': open.size + drained,
        drained: target < open.size + drained ? `${target} (capped at BENCH_PULL_DRAIN_CAP)` : target,
        'agents (4 per API process)': AGENTS,
        seconds: seconds(ms),
        'tasks/s (dequeue → complete)': round(target / (ms / 1000)),
        'dequeue ms': summarize(dequeuing),
        'complete ms': summarize(completing),
        'trivial workflows/s (same server, at start of run)': round(ctx.trivialPerSecond),
      };
      ctx.log(`pull: N=${n}: drained ${target} in ${seconds(ms)} s`);
    } else {
      out.drain = 'nothing pending';
    }
    out['offers returned during this backlog size (both processes)'] = (await offersReturned()) - returnedAtStart;
    // Whatever of the backlog is left (the cap, givebacks of aborted polls) goes.
    if (open.size > 0) ctx.log(`pull: N=${n}: terminated ${await terminate(open)} tasks left pending`);
    return out;
  }

  try {
    // The task tallies run for a deployment's lifetime: the first stats read starts them, seeded
    // from visibility, before any task here is made (a task made while they are being seeded may
    // not be counted until it moves: its tell finds no tally, and visibility lags).
    await stats(oneUrl);
    ctx.log(`pull: two API processes at ${oneUrl} and ${twoUrl}; fairness first (${FAIRNESS} : 1)…`);
    const report: Record<string, unknown> = {};
    report.fairness = await fairness();
    const perBacklog = new Map<number, Record<string, unknown>>();
    for (const plan of plans) {
      ctx.log(`pull: backlog of ${plan.n}…`);
      const result = await backlog(plan);
      perBacklog.set(plan.n, result);
      report[`backlog ${plan.n}`] = result;
    }
    report['trivial round trip ms (start of run)'] = ctx.trivialRoundTrip;
    report['trivial workflows/s (start of run)'] = round(ctx.trivialPerSecond);
    report.targets = targets(perBacklog, report.fairness as Record<string, unknown>, ctx.trivialRoundTrip);
    return report;
  } finally {
    await one.close();
    await two.close();
  }
}

/** The targets beside what this run measured. */
function targets(perBacklog: Map<number, Record<string, unknown>>, fairness: Record<string, unknown>, roundTrip: Summary): Array<Record<string, unknown>> {
  const find = (result: Record<string, unknown>, prefix: string) => Object.entries(result).find(([key]) => key.startsWith(prefix))?.[1];
  const cross = (n: number) => find(perBacklog.get(n)!, 'enqueue → dequeue ms, agent waiting') as Summary;
  const beside = (n: number) => find(perBacklog.get(n)!, 'trivial round trip ms, interleaved') as Summary;
  const backToBack = (n: number) => find(perBacklog.get(n)!, 'enqueue → dequeue ms, the same back to back') as Summary;
  const behind = (n: number) => find(perBacklog.get(n)!, 'priority 1 behind the backlog: dequeue ms') as Summary;
  const sizes = [...perBacklog.keys()];
  const largest = Math.max(...sizes);
  const label = (n: number) => `N=${n}`;
  const rows: Array<Record<string, unknown>> = [];
  rows.push({
    goal: 'cross-process p99',
    target: '≤ 2× the round trip p99',
    measured: Object.fromEntries(sizes.map((n) => [label(n), `${cross(n).p99} ms = ${round(cross(n).p99 / beside(n).p99, 2)}× the round trip p99 interleaved with it (${beside(n).p99} ms), ${round(cross(n).p99 / roundTrip.p99, 2)}× the one at start (${roundTrip.p99} ms); back to back ${backToBack(n).p99} ms = ${round(backToBack(n).p99 / beside(n).p99, 2)}×`])),
  });
  if (perBacklog.has(0)) {
    rows.push({
      goal: 'p99 at 10,000 pending',
      target: '≤ 1.5× p99 at none',
      measured: Object.fromEntries(
        sizes
          .filter((n) => n > 0)
          .map((n) => [
            label(n),
            `enqueue → dequeue (agent waiting, own queue): ${round(cross(n).p99 / cross(0).p99, 2)}×; dequeue through a priority-5 backlog in the same queue: ${round(behind(n).p99 / behind(0).p99, 2)}×`,
          ]),
      ),
      ...(largest < 10_000 ? { note: `10,000 not run: largest backlog ${largest}` } : {}),
    });
  }
  rows.push({
    goal: 'FIFO within a priority',
    target: '100%',
    measured: Object.fromEntries(sizes.map((n) => [label(n), `${round(100 * (find(perBacklog.get(n)!, 'FIFO: oldest-first share') as number), 1)}%`])),
  });
  rows.push({
    goal: 'no dequeue after a burst',
    target: 'longer than 5 s',
    measured: Object.fromEntries(
      sizes.map((n) => {
        const burst = perBacklog.get(n)!.burst as Record<string, unknown>;
        return [
          label(n),
          `longest dequeue call begun with tasks pending ${burst['longest dequeue call that began with tasks pending, s'] as number} s; longest enqueue → dequeue ${burst['longest enqueue → dequeue s'] as number} s (a queue: ${burst.tasks as number} tasks at ${burst['tasks/s (enqueue → dequeue → complete)'] as number} tasks/s)`,
        ];
      }),
    ),
  });
  rows.push({
    goal: 'two repositories at 1,000 : 1',
    target: 'the single task among the first 10 dequeued',
    measured: `position ${String(find(fairness, 'position of Y'))} (pending ${String(find(fairness, 'pending: repository X'))})`,
  });
  rows.push({
    goal: 'GET /api/v1/stats on a cluster',
    target: 'within 200 ms, without raising visibility limits',
    measured: Object.fromEntries(
      sizes.map((n) => {
        const stats = perBacklog.get(n)!['GET /api/v1/stats with the backlog pending'] as Record<string, unknown>;
        const latency = find(stats, 'ms') as Summary;
        return [label(n), `p50 ${latency.p50} ms, p99 ${latency.p99} ms, max ${latency.max} ms; at least ${String(find(stats, 'the backlog counted'))} of the backlog counted pending`];
      }),
    ),
  });
  return rows;
}
