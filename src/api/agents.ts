// Agents: the registry (config + runtime registrations) with presence, and cancelling an agent's
// current task. Hosts (GET /api/v1/hosts) are in hosts.ts.
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { durationMs } from '../config';
import type { ApiContext, PluginOptions } from './context';
import { ApiError } from './errors';
import { AgentId, AgentTypeName, errorResponses } from './schemas';

const admin = [{ adminToken: [] }];
/** How long an agent's cancel looks for its task in visibility, which lags a claim, before it says `agent_idle`. */
const VISIBILITY_LAG_MS = 2_000;

const AgentView = T.Object({
  id: T.String(),
  source: T.Union([T.Literal('config'), T.Literal('runtime')]),
  types: T.Array(T.String()),
  labels: T.Record(T.String(), T.String()),
  registered_at: T.Union([T.String(), T.Null()]),
  last_seen: T.Union([T.String(), T.Null()]),
  online: T.Boolean({ description: 'heard from within api.maxDequeueWait + 30 s' }),
  current_task: T.Union([T.String(), T.Null()], { description: 'the running task it holds, from visibility' }),
});

/** Running tasks by holder id, from visibility. */
async function runningByHolder(ctx: ApiContext): Promise<Map<string, string[]>> {
  const running = await ctx.tasks.list({ openOnly: true, state: 'running' }, 2_000);
  const out = new Map<string, string[]>();
  for (const task of running) {
    if (!task.assignee) continue;
    out.set(task.assignee, [...(out.get(task.assignee) ?? []), task.taskId]);
  }
  return out;
}

export const agentsPlugin: FastifyPluginAsync<PluginOptions> = async (fastify, { ctx }) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { directory } = ctx;
  const onlineWithinMs = durationMs(ctx.config.api.maxDequeueWait) + 30_000;

  app.get(
    '/api/v1/agents',
    {
      onRequest: ctx.admin,
      schema: {
        summary: 'Pull agents: from the config and registered at runtime, with presence',
        tags: ['agents'],
        security: admin,
        response: { 200: T.Object({ agents: T.Array(AgentView) }), ...errorResponses(401, 403, 503) },
      },
    },
    async () => {
      const [agents, lastSeen, running] = await Promise.all([directory.all(), directory.lastSeen(), runningByHolder(ctx)]);
      const now = Date.now();
      return {
        agents: agents.map((agent) => {
          const seen = lastSeen.get(agent.id) ?? null;
          return {
            id: agent.id,
            source: agent.source,
            types: agent.types,
            labels: agent.labels,
            registered_at: agent.registeredAt ?? null,
            last_seen: seen,
            online: !!seen && now - Date.parse(seen) <= onlineWithinMs,
            current_task: running.get(agent.id)?.[0] ?? null,
          };
        }),
      };
    },
  );

  app.post(
    '/api/v1/agents',
    {
      onRequest: ctx.admin,
      schema: {
        summary: 'Register a pull agent at runtime',
        description: 'Returns the agent’s bearer token (generated unless given). Keep it: only its SHA-256 is stored.',
        tags: ['agents'],
        security: admin,
        body: T.Object(
          {
            id: AgentId,
            types: T.Array(AgentTypeName, { minItems: 1, maxItems: 50, uniqueItems: true }),
            labels: T.Optional(T.Record(T.String({ maxLength: 100 }), T.String({ maxLength: 500 }), { maxProperties: 50 })),
            token: T.Optional(T.String({ minLength: 16, maxLength: 512, pattern: '^\\S+$' })),
          },
          { additionalProperties: false },
        ),
        response: {
          201: T.Object({ id: T.String(), types: T.Array(T.String()), labels: T.Record(T.String(), T.String()), source: T.Literal('runtime'), token: T.String() }),
          ...errorResponses(400, 401, 403, 409, 422, 503),
        },
      },
    },
    async (request, reply) => {
      const { agent, token } = await directory.register(request.body);
      return reply.code(201).send({ id: agent.id, types: agent.types, labels: agent.labels, source: 'runtime', token });
    },
  );

  app.delete(
    '/api/v1/agents/:id',
    {
      onRequest: ctx.admin,
      schema: {
        summary: 'Remove a runtime-registered pull agent',
        tags: ['agents'],
        security: admin,
        params: T.Object({ id: AgentId }),
        response: { 204: T.Null(), ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request, reply) => {
      await directory.unregister(request.params.id);
      return reply.code(204).send(null);
    },
  );

  app.post(
    '/api/v1/agents/:id/cancel',
    {
      onRequest: ctx.admin,
      schema: {
        summary: 'Cancel the task an agent (or SSH host) is running',
        tags: ['coordinator'],
        security: admin,
        params: T.Object({ id: AgentId }),
        body: T.Object({ reason: T.Optional(T.String({ maxLength: 1_000 })) }, { additionalProperties: false }),
        response: { 200: T.Object({ cancelled: T.Array(T.String()) }), ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request) => {
      const id = request.params.id;
      const askedAt = Date.now();
      const isHost = directory.hosts.has(id);
      if (!isHost && !(await directory.find(id))) throw new ApiError(404, 'agent_not_found', `no SSH host or pull agent ${id}`);
      // Visibility lags a claim (on SQL, by up to a second or so): an agent that found nothing is
      // looked for again, briefly, before it is called idle.
      const running = () => ctx.tasks.list({ openOnly: true, state: 'running', assignee: id }, 100);
      let candidates = await running();
      for (const deadline = Date.now() + VISIBILITY_LAG_MS; candidates.length === 0 && Date.now() < deadline; ) {
        await new Promise((resolve) => setTimeout(resolve, 250));
        candidates = await running();
      }
      const cancelled: string[] = [];
      for (const candidate of candidates) {
        // Visibility lags: cancel only what this instance still holds.
        const status = await ctx.tasks.status(candidate.taskId).catch(() => undefined);
        if (!status || status.state !== 'running' || status.assignee?.id !== id) continue;
        // Not a task it took after the request (while visibility was looked at again).
        if (status.claimedAt && Date.parse(status.claimedAt) > askedAt) continue;
        try {
          await ctx.tasks.cancel(candidate.taskId, request.body.reason ?? `cancel of ${id}'s current task`, 'api');
          cancelled.push(candidate.taskId);
        } catch {
          // closed meanwhile
        }
      }
      if (cancelled.length === 0) throw new ApiError(409, 'agent_idle', `${id} is not running a task`);
      return { cancelled };
    },
  );
};
