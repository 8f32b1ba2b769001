// GET /api/v1/tasks/{id}/logs — the agent's output: live while an SSH attempt runs, the kept tail
// afterwards (see src/task-logs.ts). `?format=text` answers the log alone as text/plain.
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { getTaskLogs, newOutput } from '../task-logs';
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

  fastify.withTypeProvider<TypeBoxTypeProvider>().get(
    '/api/v1/tasks/:id/logs/follow',
    {
      onRequest: ctx.admin,
      schema: {
        summary: 'Follow the agent’s output as it comes (Server-Sent Events), SSH and pull tasks alike',
        description:
          'A `text/event-stream`: `log` events (`{attempt, text}`: the output new since the last one, a note where more came than the live view ' +
          'keeps), `state` events (`{state, attempt}`) when either changes, and `end` (`{state}`) once the task is closed, after which the stream ' +
          'ends. SSH runs show their output as their heartbeats bring it (every 10 s at most), pull agents as they upload it.',
        tags: ['tasks'],
        security: [{ adminToken: [] }],
        params: TaskIdParam,
        response: { 200: T.String({ description: 'text/event-stream' }), ...errorResponses(401, 403, 404, 503) },
      },
    },
    async (request, reply) => {
      const taskId = request.params.id;
      // The first look answers errors (404 and such) as JSON, before the stream begins.
      let logs = await getTaskLogs(ctx.client, ctx.tasks, taskId);
      reply.hijack();
      const out = reply.raw;
      out.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      const send = (event: string, data: unknown) => out.write(`event: ${event}\ndata: ${JSON.stringify(data)}\n\n`);
      let closed = false;
      request.raw.once('close', () => (closed = true));
      let seen = { attempt: 0, chars: 0 };
      let state = '';
      let quietSince = Date.now();
      for (;;) {
        const next = newOutput(logs, seen);
        seen = next.seen;
        if (`${logs.state}/${logs.attempt}` !== state) {
          state = `${logs.state}/${logs.attempt}`;
          send('state', { state: logs.state, attempt: logs.attempt });
        }
        if (next.text) {
          send('log', { attempt: logs.attempt, text: next.text });
          quietSince = Date.now();
        } else if (Date.now() - quietSince > 15_000) {
          out.write(': still here\n\n'); // keeps proxies from closing a quiet stream
          quietSince = Date.now();
        }
        if (['completed', 'failed', 'cancelled'].includes(logs.state)) {
          send('end', { state: logs.state });
          break;
        }
        await new Promise((r) => setTimeout(r, FOLLOW_POLL_MS));
        if (closed) break;
        try {
          logs = await getTaskLogs(ctx.client, ctx.tasks, taskId);
        } catch (error) {
          send('error', { message: error instanceof Error ? error.message : String(error) });
          break;
        }
      }
      out.end();
    },
  );
};

/** How often a follower looks for new output. */
const FOLLOW_POLL_MS = 1_000;
