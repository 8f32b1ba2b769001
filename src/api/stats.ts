// GET /api/v1/stats — task counts by state × type × mode (Temporal visibility counts), hosts, agents.
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { durationMs } from '../config';
import { costWindows } from '../costs';
import { EXECUTION_MODES, TASK_STATES } from '../model';
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

/** Runs `work` over `items`, at most `concurrency` at once. */
async function pool<I>(items: I[], concurrency: number, work: (item: I) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < items.length) await work(items[next++]!);
    }),
  );
}

const CLOSED_STATES = TASK_STATES.filter((s) => s !== 'pending' && s !== 'running');

async function compute(ctx: ApiContext) {
  // Visibility counts cannot group by custom attributes: open tasks are listed (there are few),
  // closed ones counted per state × type × mode.
  const rows: Array<{ state: string; type: string; mode: string; count: number }> = [];
  const byState: Record<string, number> = Object.fromEntries(TASK_STATES.map((s) => [s, 0]));
  const add = (state: string, type: string, mode: string, count: number) => {
    if (count <= 0) return;
    const row = rows.find((r) => r.state === state && r.type === type && r.mode === mode);
    if (row) row.count += count;
    else rows.push({ state, type, mode, count });
    byState[state] = (byState[state] ?? 0) + count;
  };
  const combos = ctx.config.types.flatMap((type) => CLOSED_STATES.flatMap((state) => EXECUTION_MODES.map((mode) => ({ type, state, mode }))));
  const [open] = await Promise.all([
    ctx.tasks.list({ openOnly: true }, 100_000),
    pool(combos, 16, async ({ type, state, mode }) => add(state, type, mode, await ctx.tasks.count({ state, mode, agentType: type }))),
  ]);
  for (const task of open) {
    // A workflow still open but already closed in state is finishing its reports: counted above.
    if (task.state === 'pending' || task.state === 'running') add(task.state, task.agentType ?? '', task.mode ?? '', 1);
  }
  rows.sort((a, b) => a.type.localeCompare(b.type) || a.state.localeCompare(b.state) || a.mode.localeCompare(b.mode));
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
  // Many counts per answer: share one computation between callers for a moment.
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
        const value = compute(ctx);
        cached = { at: Date.now(), value };
        value.catch(() => {
          cached = undefined;
        });
      }
      return cached.value;
    },
  );
};
