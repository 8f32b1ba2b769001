// GET /api/v1/tasks/{id}/logs — the agent's output: live while an SSH attempt runs, the kept tail
// afterwards (see src/task-logs.ts). `?format=text` answers the log alone as text/plain.
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { getTaskLogs } from '../task-logs';
import type { PluginOptions } from './context';
import { errorResponses, InstanceSchema, TaskIdParam } from './schemas';

const nullable = <S extends Parameters<typeof T.Union>[0][number]>(schema: S) => T.Union([schema, T.Null()]);

const LogsView = T.Object({
  task_id: T.String(),
  state: T.String(),
  attempt: T.Integer(),
  source: T.Union([T.Literal('live'), T.Literal('final'), T.Literal('none')], {
    description: 'live: the running attempt’s output so far; final: the kept tail of the last attempt; none: no output',
  }),
  log: T.String({ description: 'the latest attempt’s output (bounded: its beginning and its latest part)' }),
  log_chars: nullable(T.Integer({ description: 'characters written so far by the running agent' })),
  progress: nullable(T.String({ description: 'the running agent’s latest progress line' })),
  attempts: T.Array(
    T.Object({ attempt: T.Integer(), holder: InstanceSchema, mode: T.String(), end: T.String(), log: nullable(T.String()) }),
  ),
});

export const logsPlugin: FastifyPluginAsync<PluginOptions> = async (fastify, { ctx }) => {
  fastify.withTypeProvider<TypeBoxTypeProvider>().get(
    '/api/v1/tasks/:id/logs',
    {
      onRequest: ctx.admin,
      schema: {
        summary: 'The agent’s output: live while it runs on an SSH host, the kept tail afterwards',
        tags: ['tasks'],
        security: [{ adminToken: [] }],
        params: TaskIdParam,
        querystring: T.Object({ format: T.Optional(T.Union([T.Literal('json'), T.Literal('text')])) }, { additionalProperties: false }),
        response: { 200: T.Union([LogsView, T.String()]), ...errorResponses(401, 403, 404, 503) },
      },
    },
    async (request, reply) => {
      const logs = await getTaskLogs(ctx.client, ctx.tasks, request.params.id);
      if (request.query.format === 'text') return reply.type('text/plain; charset=utf-8').send(logs.log);
      return {
        task_id: logs.taskId,
        state: logs.state,
        attempt: logs.attempt,
        source: logs.source,
        log: logs.log,
        log_chars: logs.logChars ?? null,
        progress: logs.progress ?? null,
        attempts: logs.attempts,
      };
    },
  );
};
