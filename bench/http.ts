// The HTTP face's benchmark, called by bench/run.ts: a signed Forgejo webhook received → a
// waiting pull agent's dequeue returns it, with K agents long-polling over real HTTP.
//   1. latency, one task at a time, agents on the API process that received the webhook
//      (its offer is matched to that same process's poll);
//   2. the same with the agents on a second API process (Temporal's task-queue matching: the
//      task's offer reaches the process where its agent waits, src/api/pull-matcher.ts);
//   3. throughput: webhook → dequeue → complete for many tasks sent concurrently.
//   BENCH_TASKS (default 200), BENCH_AGENTS (default 8)
import type { AddressInfo } from 'node:net';
import { buildApp } from '../src/api/app';
import { parseConfig } from '../src/config';
import { taskId as makeTaskId } from '../src/names';
import { forgejoRequest, issueAssigned } from '../test/support/forgejo-fixtures';
import type { BenchContext } from './context';
import { pool, round, summarize } from './stats';

const TASKS = Number(process.env.BENCH_TASKS ?? 200);
const AGENTS = Number(process.env.BENCH_AGENTS ?? 8);
const SECRET = 'bench-webhook-secret';

interface Agent {
  id: string;
  token: string;
}

export async function benchHttp(ctx: BenchContext): Promise<Record<string, unknown>> {
  const type = `bh${Date.now().toString(36)}`;
  const agents: Agent[] = Array.from({ length: AGENTS }, (_, i) => ({ id: `${type}-agent-${i}`, token: `${type}-token-${i}-0123456789` }));
  const config = parseConfig(
    {
      temporal: { address: ctx.address, namespace: 'default' },
      api: { adminToken: 'bench-admin-token', maxDequeueWait: '60s' },
      webhook: { secret: SECRET, mergeType: type },
      types: [type],
      logins: { 'bench-dev': type },
      tasks: { matchWindow: '10m' },
      agents: agents.map((a) => ({ id: a.id, token: a.token, types: [type] })),
    },
    {},
  );
  const receiver = await buildApp({ config, client: ctx.client, logger: false });
  const other = await buildApp({ config, client: ctx.client, logger: false });
  const urls: string[] = [];
  for (const app of [receiver, other]) {
    await app.listen({ host: '127.0.0.1', port: 0 });
    urls.push(`http://127.0.0.1:${(app.server.address() as AddressInfo).port}`);
  }
  const [receiverUrl, otherUrl] = urls as [string, string];

  // Webhook send times and dequeue times per task id.
  const sentAt = new Map<string, number>();
  const dequeuedAt = new Map<string, number>();
  const waiters = new Map<string, () => void>();
  let completed = 0;
  let stop = false;
  let pollBase = receiverUrl;

  async function runAgent(agent: Agent): Promise<void> {
    const auth = { authorization: `Bearer ${agent.token}` };
    while (!stop) {
      const res = await fetch(`${pollBase}/api/v1/tasks/dequeue?agent_id=${agent.id}&wait=30`, { headers: auth }).catch(() => undefined);
      if (!res) {
        await new Promise((r) => setTimeout(r, 50)); // an API process going away at the end
        continue;
      }
      if (res.status !== 200) {
        await res.arrayBuffer();
        continue;
      }
      const at = performance.now();
      const grant = (await res.json()) as { task_id: string; attempt: number };
      dequeuedAt.set(grant.task_id, at);
      const done = await fetch(`${pollBase}/api/v1/tasks/${encodeURIComponent(grant.task_id)}/complete`, {
        method: 'POST',
        headers: { ...auth, 'content-type': 'application/json' },
        body: JSON.stringify({ agent_id: agent.id, attempt: grant.attempt, summary: 'bench' }),
      });
      await done.arrayBuffer();
      completed += 1;
      waiters.get(grant.task_id)?.();
    }
  }

  let number = 0;
  const repo = `bench/${type}`;
  /** Sends one signed issue-assigned delivery; resolves when an agent has completed its task. */
  async function deliver(target: string): Promise<string> {
    number += 1;
    const { body, headers } = forgejoRequest(issueAssigned(repo, number, ['bench-dev']), SECRET);
    const taskId = makeTaskId('implement', repo, number, type);
    const finished = new Promise<void>((resolve) => waiters.set(taskId, resolve));
    sentAt.set(taskId, performance.now());
    const res = await fetch(`${target}/api/v1/webhooks/forgejo`, { method: 'POST', headers, body });
    if (res.status !== 202) throw new Error(`webhook answered ${res.status}: ${await res.text()}`);
    await res.arrayBuffer();
    await finished;
    return taskId;
  }
  const latencies = (ids: string[]) => ids.map((id) => dequeuedAt.get(id)! - sentAt.get(id)!);
  const waitingOn = async (url: string) => Number(/^drover_dequeue_waiting (\d+)$/m.exec(await (await fetch(`${url}/metrics`)).text())?.[1] ?? 0);
  const allWaiting = async (url: string) => {
    while ((await waitingOn(url)) < AGENTS) await new Promise((r) => setTimeout(r, 5));
  };
  /** Moves the agents to another API process: each finishes one more task, then polls there. */
  const switchTo = async (url: string) => {
    pollBase = url;
    while ((await waitingOn(url)) < AGENTS) await deliver(receiverUrl);
  };

  const running = agents.map((agent) => runAgent(agent).catch(() => undefined));
  try {
    ctx.log(`http: ${AGENTS} agents long-polling; warming up…`);
    await allWaiting(receiverUrl);
    for (let i = 0; i < 10; i++) await deliver(receiverUrl);

    // 1. One at a time, agents waiting on the receiving process.
    const local: string[] = [];
    for (let i = 0; i < TASKS; i++) {
      await allWaiting(receiverUrl);
      local.push(await deliver(receiverUrl));
    }
    ctx.log(`http: same-process path done (${TASKS} tasks)`);

    // 2. One at a time, agents waiting on another API process.
    await switchTo(otherUrl);
    const cross: string[] = [];
    const crossTasks = Math.max(20, Math.floor(TASKS / 4));
    for (let i = 0; i < crossTasks; i++) {
      await allWaiting(otherUrl);
      cross.push(await deliver(receiverUrl));
    }
    ctx.log(`http: cross-process path done (${crossTasks} tasks)`);

    // 3. Throughput: many deliveries at once, agents back on the receiving process.
    await switchTo(receiverUrl);
    const before = completed;
    const burst: string[] = [];
    const started = performance.now();
    await pool(
      Array.from({ length: TASKS }, (_, i) => i),
      16,
      async () => {
        burst.push(await deliver(receiverUrl));
      },
    );
    const seconds = (performance.now() - started) / 1000;
    const perSecond = (completed - before) / seconds;
    ctx.log(`http: throughput done (${TASKS} tasks in ${round(seconds, 2)} s)`);

    return {
      agents: AGENTS,
      'webhook → dequeue ms, agents on the receiving API process': summarize(latencies(local)),
      'webhook → dequeue ms, agents on another API process (task-queue matching)': summarize(latencies(cross)),
      'tasks/s end to end (webhook → dequeue → complete, 16 senders)': round(perSecond),
      'webhook → dequeue ms under that load': summarize(latencies(burst)),
      'trivial workflow round trip ms (same server, one at a time, at start of run)': ctx.trivialRoundTrip,
      'ratio cross-process p99 / round trip p99 (target ≤ 2)': round(summarize(latencies(cross)).p99 / ctx.trivialRoundTrip.p99, 2),
      'trivial workflows/s (same server)': round(ctx.trivialPerSecond),
      'ratio http/trivial': round(perSecond / ctx.trivialPerSecond, 2),
    };
  } finally {
    stop = true;
    await receiver.close();
    await other.close();
    await Promise.allSettled(running);
  }
}
