// GET /api/v1/stats — task counts by state × type × mode (from the task tally workflow, one query:
// src/task-tally.ts), hosts, agents, cost.
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { durationMs } from '../config';
import { costWindows } from '../costs';
import { TASK_STATES } from '../model';
import { countTasksFromVisibility } from '../task-tally';
import { TaskTallyBook, type TaskCount } from '../workflows/task-tally-book';
import type { ApiContext, PluginOptions } from './context';
import { errorResponses } from './schemas';

const CostSum = T.Object({ usd: T.Number(), tokens: T.Integer(), runs: T.Integer() });
const CostWindowView = T.Object({
  usd: T.Number(),
  tokens: T.Integer(),
  runs: T.Integer(),
  by_type: T.Record(T.String(), CostSum),
  by_repo: T.Record(T.String(), CostSum),
});

const StatsView = T.Object({
  tasks: T.Object({
    total: T.Integer(),
    by_state: T.Record(T.String(), T.Integer()),
    by_state_type_mode: T.Array(T.Object({ state: T.String(), type: T.String(), mode: T.String(), count: T.Integer() }), {
      description: 'non-zero combinations only',
    }),
  }),
  hosts: T.Object({ configured: T.Integer(), online: T.Union([T.Integer(), T.Null()]), slots: T.Integer() }),
  agents: T.Object({ configured: T.Integer(), runtime: T.Integer(), online: T.Integer(), waiting_here: T.Integer() }),
  cost: T.Object(
    { today: CostWindowView, last_30_days: CostWindowView },
    { description: 'what agent runs cost, as their CLIs reported it: today and the last 30 days (UTC days), by agent type and repository' },
  ),
  at: T.String(),
});

async function compute(ctx: ApiContext, taskCounts: () => Promise<TaskCount[]>) {
  const rows = (await taskCounts()).map(({ state, type, mode, count }) => ({ state, type, mode, count })).filter((row) => row.count > 0);
  rows.sort((a, b) => a.type.localeCompare(b.type) || a.state.localeCompare(b.state) || a.mode.localeCompare(b.mode));
  const byState: Record<string, number> = Object.fromEntries(TASK_STATES.map((s) => [s, 0]));
  for (const row of rows) byState[row.state] = (byState[row.state] ?? 0) + row.count;
  const [costs, agents, lastSeen, hostStates] = await Promise.all([
    ctx.costs.read(),
    ctx.directory.all(),
    ctx.directory.lastSeen(),
    Promise.all(ctx.config.hosts.map((h) => Promise.resolve(ctx.hostPresence?.(h.id)).catch(() => undefined))),
  ]);
  const onlineWithinMs = durationMs(ctx.config.api.maxDequeueWait) + 30_000;
  const now = Date.now();
  const known = hostStates.filter((s) => s !== undefined);
  return {
    tasks: { total: Object.values(byState).reduce((a, b) => a + b, 0), by_state: byState, by_state_type_mode: rows },
    hosts: {
      configured: ctx.config.hosts.length,
      online: ctx.hostPresence && known.length > 0 ? known.filter((s) => s!.online).length : null,
      slots: ctx.config.hosts.reduce((n, h) => n + h.slots, 0),
    },
    agents: {
      configured: agents.filter((a) => a.source === 'config').length,
      runtime: agents.filter((a) => a.source === 'runtime').length,
      online: agents.filter((a) => lastSeen.has(a.id) && now - Date.parse(lastSeen.get(a.id)!) <= onlineWithinMs).length,
      waiting_here: ctx.pull.waitingCount,
    },
    cost: costWindows(costs),
    at: new Date().toISOString(),
  };
}

export const statsPlugin: FastifyPluginAsync<PluginOptions> = async (fastify, { ctx }) => {
  const taskCounts = async (): Promise<TaskCount[]> => {
    try {
      return await ctx.taskTally.read();
    } catch (error) {
      // No worker runs the tallies, or one has not answered for 30 s: count the expensive way, this once.
      fastify.log.warn({ err: error }, 'task tally unavailable: counting tasks from visibility instead (many visibility calls)');
      return new TaskTallyBook(await countTasksFromVisibility(ctx.tasks, ctx.config.types)).counts();
    }
  };
  // Several reads per answer: share one computation between callers for a moment.
  let cached: { at: number; value: Promise<Awaited<ReturnType<typeof compute>>> } | undefined;
  fastify.withTypeProvider<TypeBoxTypeProvider>().get(
    '/api/v1/stats',
    {
      onRequest: ctx.admin,
      schema: {
        summary: 'Counts by state, type and mode; hosts; agents; cost',
        tags: ['operators'],
        security: [{ adminToken: [] }],
        response: { 200: StatsView, ...errorResponses(401, 403, 503) },
      },
    },
    async () => {
      if (!cached || Date.now() - cached.at > 1_000) {
        const value = compute(ctx, taskCounts);
        cached = { at: Date.now(), value };
        value.catch(() => {
          cached = undefined;
        });
      }
      return cached.value;
    },
  );
};
