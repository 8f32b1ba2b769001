// Issue 11's fault cases on the cluster tier: Temporal server 1.29.1 on PostgreSQL, stopped and
// started by scripts/cluster.sh while Drover works. Run alone (vitest.cluster-faults.config.ts):
// a stopped server would fail every other test running beside them.
// - Temporal down for longer than the lease: the agent's kept result is taken, nothing runs twice
//   (the same case as test/outage.test.ts on the dev server).
// - PostgreSQL down for 10 s while agents work through a batch: every task completes, once, no
//   two runs of a task overlap, and none is run twice.
// The third case, an API process killed right after it claimed for its agent, is
// test/pull-matching.test.ts's confirm-window test, which this tier runs too.
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest';
import { clusterScript as cluster } from '../support/cluster-script';
import { agent, dequeue, enqueue, taskUrl } from '../support/http';
import { finishesDuringOutage, type OutageHarness, quietCoreRuntime, serverAnswers, startOutageHarness } from '../support/outage';
import { uniqueType, waitFor } from '../support/temporal';

const address = () => inject('temporalAddress');

beforeAll(() => {
  if (!inject('clusterControlled')) {
    throw new Error('the fault tests stop and start the cluster: run them on the one scripts/cluster.sh runs (unset DROVER_TEST_TEMPORAL_ADDRESS)');
  }
  quietCoreRuntime();
});

// Whatever a failed test left stopped is started again for the next.
afterAll(() => cluster('start'));

describe('on Temporal on PostgreSQL', () => {
  test('Temporal down for longer than the lease: the result the agent kept is taken when it is back, and the task is not run again', async () => {
    const figures = await finishesDuringOutage(address(), 'default', uniqueType(), {
      leaseMs: 10_000,
      outageMs: 30_000, // three leases
      down: () => cluster('stop', 'temporal'),
      up: () => cluster('start'),
    });
    // Figures for the notes (issue 11: back within a second or two), not timing assertions.
    console.log(`outage: /readyz 200 ${figures.readyAfterServerMs} ms after the server answered; the kept report taken after ${figures.reportTakenAfterServerMs} ms; a new task reached a waiting agent after ${figures.nextDequeuedAfterServerMs} ms`);
  }, 240_000);

  test('PostgreSQL down for 10 s while four agents work through 24 tasks: every task completes, run once: none is redone, no two runs overlap', async () => {
    const type = uniqueType();
    const agents = Array.from({ length: 4 }, (_, i) => agent(`pg-${type}-${i}`, [type]));
    const h: OutageHarness = await startOutageHarness(address(), 'default', { types: [type], agents: agents.map((a) => a.config) });
    const runs = new Map<string, Array<{ agent: string; from: number; to: number }>>(); // task id → its commands' runs
    const refused: string[] = [];
    let stop = false;
    try {
      const ids: string[] = [];
      for (let i = 0; i < 24; i += 1) ids.push(await enqueue(h.app, { agent_type: type, title: `batch ${i}`, prompt: 'p' }));
      const done = new Set<string>();

      // As `drover agent` does: a 503 is retried; any other answer to a report is final.
      const report = async (taskId: string, path: string, payload: Record<string, unknown>, who: (typeof agents)[number]) => {
        for (let tries = 1; ; tries += 1) {
          const res = await h.app.inject({ method: 'POST', url: taskUrl(taskId, path), headers: who.auth, payload: { agent_id: who.id, ...payload } });
          if (res.statusCode !== 503) return { res, retried: tries > 1 };
          await new Promise((r) => setTimeout(r, 250));
        }
      };
      // `drover agent`'s rules: the command starts at once, beside the first heartbeat, which
      // confirms the claim; a heartbeat refused stops it. (Its fence, which stops a command no
      // heartbeat was answered for within the grant's lease, never acts: commands here take 300 ms.)
      const work = async (who: (typeof agents)[number]) => {
        while (!stop && done.size < ids.length) {
          const got = await dequeue(h.app, who, 2);
          if (got.statusCode !== 200) continue; // 204 nothing yet, 503 while the database is down
          const { task_id: taskId, attempt } = got.json() as { task_id: string; attempt: number };
          const run = { agent: who.id, from: Date.now(), to: Infinity };
          runs.set(taskId, [...(runs.get(taskId) ?? []), run]);
          let lost = false;
          const command = new Promise<void>((resolve) => {
            const timer = setTimeout(resolve, 300);
            void report(taskId, 'heartbeat', { attempt }, who).then(({ res }) => {
              if (res.statusCode !== 200 && run.to === Infinity) {
                lost = true;
                clearTimeout(timer);
                resolve();
              }
            });
          });
          await command;
          run.to = Date.now();
          if (lost) continue;
          const { res, retried } = await report(taskId, 'complete', { attempt, summary: `ran by ${who.id}` }, who);
          // task_closed after a try whose answer was lost: most likely that try was applied and the
          // task closed since (the final checks below say whether it was).
          if (res.statusCode === 200 || (retried && res.statusCode === 409 && res.json().code === 'task_closed')) done.add(taskId);
          else refused.push(`${taskId} (${who.id}): ${res.statusCode} ${res.body}`);
        }
      };
      const working = Promise.all(agents.map(work));
      working.catch(() => undefined); // raced below; after a failure, the agents end with the app

      await waitFor(() => (done.size >= 6 ? true : undefined), 'a quarter of the batch done', 60_000);
      await cluster('stop', 'postgres');
      await new Promise((r) => setTimeout(r, 10_000));
      await cluster('start');
      await serverAnswers(address());
      await Promise.race([working, new Promise((_, reject) => setTimeout(() => reject(new Error(`${done.size} of ${ids.length} done after 3 min`)), 180_000))]);

      for (const taskId of ids) {
        const final = await h.tasks.result(taskId);
        const ranBy = (runs.get(taskId) ?? []).map((r) => r.agent);
        expect(final.state, taskId).toBe('completed');
        expect(ranBy.map((id) => `ran by ${id}`), taskId).toContain(final.result?.summary);
        const [first, second] = [...(runs.get(taskId) ?? [])].sort((a, b) => a.from - b.from);
        if (second) expect(second.from, `${taskId}: runs overlap`).toBeGreaterThanOrEqual(first!.to);
      }
      // No work redone: a claim whose confirming heartbeat the outage held up lapses on time, but
      // its holder's late heartbeat or result is taken while no other attempt has started, and
      // the task waits tasks.lapseGrace for it (LapsedAttempt in src/workflows/task-machine.ts).
      const redone = ids.filter((id) => (runs.get(id)?.length ?? 0) > 1);
      const retaken = (await Promise.all(ids.map((id) => h.tasks.status(id)))).filter((s) => s.attempts.some((a) => a.retaken)).length;
      console.log(`postgres outage: ${redone.length} of ${ids.length} tasks run twice; ${retaken} taken back by their lapsed holder; reports refused: ${refused.join('; ') || 'none'}`);
      expect(redone, 'tasks run twice').toEqual([]);
      expect(refused).toEqual([]);
    } finally {
      stop = true;
      await h.close();
    }
  }, 300_000);
});
