// GET /api/v1/tasks/{id}/session — for the pull agent holding a task: the session of an earlier
// task with the same session key, so that `drover agent` can resume it (Claude Code `--resume`).
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { findEarlierSession } from '../sessions';
import { bearerToken } from './auth';
import type { PluginOptions } from './context';
import { ApiError } from './errors';
import { AgentId, errorResponses, InstanceSchema, TaskIdParam } from './schemas';

const SessionView = T.Object({
  task_id: T.String(),
  session_key: T.Union([T.String(), T.Null()]),
  earlier: T.Union([
    T.Object({
      session_id: T.String(),
      task_id: T.String({ description: 'the earlier task that ran the session' }),
      holder: T.Union([InstanceSchema, T.Null()], { description: 'where it ran: agent sessions usually live on that machine' }),
      closed_at: T.Union([T.String(), T.Null()]),
    }),
    T.Null(),
  ]),
});

export const sessionsPlugin: FastifyPluginAsync<PluginOptions> = async (fastify, { ctx }) => {
  fastify.withTypeProvider<TypeBoxTypeProvider>().get(
    '/api/v1/tasks/:id/session',
    {
      schema: {
        summary: 'The earlier agent session of the task’s session key (for the pull agent holding the task)',
        tags: ['pull agents'],
        security: [{ agentToken: [] }],
        params: TaskIdParam,
        querystring: T.Object({ agent_id: AgentId }, { additionalProperties: false }),
        response: { 200: SessionView, ...errorResponses(400, 401, 404, 409, 503) },
      },
    },
    async (request) => {
      const agent = await ctx.directory.authenticate(request.query.agent_id, bearerToken(request));
      const status = await ctx.tasks.status(request.params.id);
      if (status.assignee?.kind !== 'agent' || status.assignee.id !== agent.id) {
        throw new ApiError(409, 'not_lease_holder', `pull agent ${agent.id} does not hold task ${status.taskId}`);
      }
      const earlier = await findEarlierSession(ctx.client, status.input);
      return {
        task_id: status.taskId,
        session_key: status.input.sessionKey ?? null,
        earlier: earlier
          ? { session_id: earlier.sessionId, task_id: earlier.taskId, holder: earlier.holder ?? null, closed_at: earlier.closedAt ?? null }
          : null,
      };
    },
  );
};
