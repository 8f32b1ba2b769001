// SSH match latency: task started → remote command running, with H hosts of S slots each, on
// real sshd instances (as in the tests), beside the trivial-workflow baseline of the same run.
//   BENCH_SSH_HOSTS (default 3), BENCH_SSH_SLOTS (default 2), BENCH_SSH_TASKS (default 60)
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { NativeConnection } from '@temporalio/worker';
import type { HostConfig } from '../src/config';
import { createLogger } from '../src/log';
import { TASKS_QUEUE } from '../src/names';
import { startSshHosts } from '../src/workers/ssh-hosts';
import { SshdFleet } from '../test/support/sshd';
import type { BenchContext } from './context';
import { pool, round, summarize } from './stats';

const HOSTS = Number(process.env.BENCH_SSH_HOSTS ?? 3);
const SLOTS = Number(process.env.BENCH_SSH_SLOTS ?? 2);
const TASKS = Number(process.env.BENCH_SSH_TASKS ?? 60);
/** Agents held running to count the server's writes per running agent-hour, and for how long. */
const HELD_AGENTS = Number(process.env.BENCH_SSH_HELD_AGENTS ?? 2);
const HOLD_S = Number(process.env.BENCH_SSH_HOLD_S ?? 70);

/**
 * Activity heartbeats the server has recorded so far (namespace default): each is a write of the
 * workflow's state, and the cost of a running agent between its start and its end.
 */
async function heartbeatWrites(metricsUrl: string): Promise<number> {
  const text = await (await fetch(metricsUrl)).text();
  let total = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith('service_requests{') || !line.includes('operation="RecordActivityTaskHeartbeat"')) continue;
    if (!line.includes('namespace="default"') || !line.includes('service_name="frontend"')) continue;
    total += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return total;
}

async function until(probe: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`bench: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export async function benchSsh(ctx: BenchContext): Promise<Record<string, unknown>> {
  const type = `benchssh-${Date.now()}`;
  const marks = mkdtempSync(join(tmpdir(), 'drover-bench-ssh-'));
  const fleet = await SshdFleet.start(HOSTS, 'bench');
  // The agent: records the wall clock (same machine, same clock) the moment it runs, and exits.
  const command = ['/bin/sh', '-c', 'date +%s%N > "$0/$DROVER_TASK_ID.t"', marks];
  // A second type whose agent only sleeps: the held runs whose cost is counted.
  const heldType = `benchhold-${Date.now()}`;
  const hold = ['/bin/sh', '-c', 'sleep "$0"', String(HOLD_S)];
  const hosts: HostConfig[] = fleet.hosts.map((h) =>
    fleet.hostConfig(h.id, {
      types: [type, heldType],
      slots: SLOTS,
      agents: { [type]: { provider: 'command', command }, [heldType]: { provider: 'command', command: hold } },
      healthCheckInterval: '5s',
    }),
  );
  const runnerStarted = new Map<string, number>();
  const ssh = await startSshHosts({
    hosts,
    client: ctx.client,
    connect: () => NativeConnection.connect({ address: ctx.address }),
    namespace: 'default',
    log: createLogger('silent'),
    hooks: { onStarted: ({ taskId }) => runnerStarted.set(taskId, Date.now()) },
  });
  try {
    await until(() => ssh.hosts.every((h) => h.workers.slots.online), 'the hosts to come online');

    // The engine's own latency on this server: one trivial workflow at a time.
    const trivial: number[] = [];
    for (let i = 0; i < 30; i++) {
      const t0 = performance.now();
      await ctx.client.workflow.execute('trivialWorkflow', { taskQueue: TASKS_QUEUE, workflowId: `bench-ssh-trivial-${Date.now()}-${i}` });
      trivial.push(performance.now() - t0);
    }

    const run = async (label: string, concurrency: number) => {
      const startedAt = new Map<string, number>();
      const ids: string[] = [];
      const t0 = performance.now();
      await pool(
        Array.from({ length: TASKS }, (_, i) => i + 1),
        concurrency,
        async (n) => {
          const at = Date.now();
          const { taskId } = await ctx.tasks.start({ agentType: type, kind: 'implement', repo: `bench/${label}-${Date.now()}`, number: n, title: 'bench', prompt: 'p', options: { matchWindowMs: 120_000 } });
          startedAt.set(taskId, at);
          ids.push(taskId);
          const status = await ctx.tasks.result(taskId);
          if (status.state !== 'completed') throw new Error(`bench: ${taskId} ended ${status.state}: ${status.result?.summary}`);
        },
      );
      const seconds = (performance.now() - t0) / 1000;
      const remote = ids.map((id) => {
        const file = join(marks, `${id}.t`);
        if (!existsSync(file)) throw new Error(`bench: no mark for ${id}`);
        return Number(BigInt(readFileSync(file, 'utf8').trim()) / 1_000_000n) - startedAt.get(id)!;
      });
      const runner = ids.map((id) => runnerStarted.get(id)! - startedAt.get(id)!);
      return {
        tasks: TASKS,
        concurrency,
        'task started → remote command running ms': summarize(remote),
        'task started → runner saw the remote start ms': summarize(runner),
        'tasks/s (start → remote run → completed)': round(TASKS / seconds),
      };
    };
    const slots = HOSTS * SLOTS;
    // Always a free slot: the match itself. Then a burst with 4× as many tasks in flight as slots.
    const unloaded = await run('free', slots);
    const burst = await run('burst', slots * 4);

    // What running agents cost the server: the heartbeats it records while HELD_AGENTS agents run
    // (their leases renewed on the hosts meanwhile), less the same window with none running.
    const windowS = Math.max(10, HOLD_S - 20);
    await new Promise((r) => setTimeout(r, 10_000)); // the runs above have closed
    const idle0 = await heartbeatWrites(ctx.metricsUrl);
    const idleT0 = performance.now();
    await new Promise((r) => setTimeout(r, windowS * 1000));
    const idleWrites = (await heartbeatWrites(ctx.metricsUrl)) - idle0;
    const idleHours = (performance.now() - idleT0) / 3_600_000;
    const held = await Promise.all(
      Array.from({ length: HELD_AGENTS }, (_, i) =>
        ctx.tasks.start({ agentType: heldType, kind: 'implement', repo: `bench/held-${Date.now()}`, number: i + 1, title: 'held', prompt: 'p', options: { matchWindowMs: 120_000 } }),
      ),
    );
    await until(() => held.every(({ taskId }) => runnerStarted.has(taskId)), 'the held agents to run');
    await new Promise((r) => setTimeout(r, 5_000)); // past the start's own writes
    const w0 = await heartbeatWrites(ctx.metricsUrl);
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, windowS * 1000));
    const writes = (await heartbeatWrites(ctx.metricsUrl)) - w0;
    const hours = (performance.now() - t0) / 3_600_000;
    await Promise.all(held.map(({ taskId }) => ctx.tasks.result(taskId)));
    const perAgentHour = (writes / hours - idleWrites / idleHours) / HELD_AGENTS;
    const heartbeatRun = {
      'running agents': HELD_AGENTS,
      'window s': round(hours * 3600),
      'heartbeats recorded: window with agents running, and the same window idle': [writes, idleWrites],
      'heartbeat writes per running agent-hour (running less idle)': round(perAgentHour),
      'before (a heartbeat a second, each a write): about': 3_600,
    };
    return {
      hosts: HOSTS,
      slotsPerHost: SLOTS,
      'free slot (concurrency = total slots)': unloaded,
      'burst (concurrency = 4 × total slots, queueing included)': burst,
      'running agents: server writes': heartbeatRun,
      'trivial workflow round trip ms (same server, one at a time)': summarize(trivial),
      'trivial workflows/s (same server)': round(ctx.trivialPerSecond),
    };
  } finally {
    await ssh.shutdown();
    await fleet.stop();
    rmSync(marks, { recursive: true, force: true });
  }
}
