// The race: many tasks, many concurrent claimants (host attempts, dequeue-style claims and
// assigns all firing together). Every task must be claimed exactly once and closed exactly once.
import { afterAll, beforeAll, expect, test } from 'vitest';
import type { Claimant } from '../src/model';
import { TaskError } from '../src/task-errors';
import { RecordingRunner } from './support/runners';
import { connectTestTemporal, type TestTemporal, uniqueRepo, uniqueType } from './support/temporal';

let t: TestTemporal;
beforeAll(async () => {
  t = await connectTestTemporal();
  await t.startTaskWorker();
});
afterAll(async () => t?.close());

const TASKS = 40;
const AGENTS = 4;
const HOSTS = 2;

test(`${TASKS} tasks, ${HOSTS} SSH hosts, ${AGENTS} pull agents and a coordinator racing: each task claimed and closed exactly once`, async () => {
  const type = uniqueType('race');
  const repo = uniqueRepo();
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

  const runner = new RecordingRunner(async (ctx) => {
    await pause(10 + Math.floor(Math.random() * 40));
    return { outcome: 'success', summary: `host ${ctx.hostId}` };
  });
  const hostIds = Array.from({ length: HOSTS }, (_, i) => `h${i}-${type}`);
  const agentIds = Array.from({ length: AGENTS }, (_, i) => `a${i}-${type}`);
  for (const id of hostIds) await t.startHost(id, [type], 2, runner);

  const ids: string[] = [];
  for (let n = 1; n <= TASKS; n++) {
    // A short window, so that hosts and pull agents really compete for the same tasks.
    const { taskId } = await t.tasks.start({ agentType: type, kind: 'implement', repo, number: n, title: `race ${n}`, prompt: 'p', options: { matchWindowMs: 400 } });
    ids.push(taskId);
  }

  const open = new Set(ids);
  const agentWins = new Map<string, string>(); // taskId → agent
  const rejections = new Map<string, number>();
  const countRejection = (error: unknown) => {
    if (!(error instanceof TaskError)) throw error;
    rejections.set(error.code, (rejections.get(error.code) ?? 0) + 1);
  };
  const shuffled = () => [...open].sort(() => Math.random() - 0.5);

  async function pullAgent(agentId: string): Promise<void> {
    const me: Claimant = { kind: 'agent', id: agentId, types: [type] };
    while (open.size > 0) {
      for (const taskId of shuffled()) {
        try {
          const grant = await t.tasks.claim(taskId, me);
          if (agentWins.has(taskId)) throw new Error(`${taskId} claimed twice by pull agents`);
          agentWins.set(taskId, agentId);
          await t.tasks.complete(taskId, me, grant.attempt, { outcome: 'success', summary: `agent ${agentId}` });
        } catch (error) {
          countRejection(error);
        }
      }
      await pause(20);
    }
  }

  let assignsAccepted = 0;
  async function coordinator(): Promise<void> {
    const targets: Claimant[] = [
      ...hostIds.map((id): Claimant => ({ kind: 'host', id, types: [type] })),
      ...agentIds.map((id): Claimant => ({ kind: 'agent', id, types: [type] })),
    ];
    while (open.size > 0) {
      const [taskId] = shuffled();
      if (taskId) {
        try {
          await t.tasks.assign(taskId, targets[Math.floor(Math.random() * targets.length)]!);
          assignsAccepted += 1;
        } catch (error) {
          countRejection(error);
        }
      }
      await pause(15);
    }
  }

  async function closer(): Promise<void> {
    await Promise.all(
      ids.map(async (taskId) => {
        await t.tasks.result(taskId);
        open.delete(taskId);
      }),
    );
  }

  await Promise.all([closer(), coordinator(), ...agentIds.map(pullAgent)]);

  const finals = await Promise.all(ids.map((id) => t.tasks.result(id)));
  const hostRuns = runner.runs.map((r) => r.taskId);
  for (const final of finals) {
    expect(final.state, final.taskId).toBe('completed');
    // Claimed exactly once: one attempt, never lost, never a second claimant.
    expect(final.attempts, final.taskId).toHaveLength(1);
    expect(final.attempts[0]?.end).toBe('completed');
    const ranOnHosts = hostRuns.filter((id) => id === final.taskId).length;
    const ranOnAgents = agentWins.has(final.taskId) ? 1 : 0;
    expect(ranOnHosts + ranOnAgents, `${final.taskId} ran ${ranOnHosts}× on hosts, ${ranOnAgents}× on agents`).toBe(1);
    expect(final.result?.summary).toBe(final.mode === 'ssh_cli' ? `host ${final.assignee?.id}` : `agent ${final.assignee?.id}`);
  }
  // Closed exactly once: each workflow has exactly one closing event in its history.
  for (const id of ids) {
    const history = await t.client.workflow.getHandle(id).fetchHistory();
    const closing = (history.events ?? []).filter((e) => e.workflowExecutionCompletedEventAttributes || e.workflowExecutionFailedEventAttributes);
    expect(closing, id).toHaveLength(1);
  }

  const byHost = finals.filter((f) => f.mode === 'ssh_cli').length;
  const byAgent = finals.filter((f) => f.mode === 'http_pull').length;
  console.log(
    `race: ${TASKS} tasks → ${byHost} run on SSH hosts, ${byAgent} by pull agents; ` +
      `claims won ${byHost + byAgent}, lost/rejected ${JSON.stringify(Object.fromEntries(rejections))}; assigns accepted ${assignsAccepted}; ` +
      `none lost, none run twice`,
  );
  expect(byHost + byAgent).toBe(TASKS);
  expect(new Set(hostRuns).size).toBe(hostRuns.length);
}, 180_000);
