// The pull-agent protocol (each agent's own token): dequeue, heartbeat, complete, fail, release.
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { InstanceRef } from '../model';
import { bearerToken } from './auth';
import type { PluginOptions } from './context';
import { ApiError } from './errors';
import { AgentId, errorResponses, GrantSchema, grantView, HolderFields, OutputField, TaskIdParam, TaskViewSchema, taskView } from './schemas';

const agentAuth = [{ agentToken: [] }];

export const tasksAgentsPlugin: FastifyPluginAsync<PluginOptions> = async (fastify, { ctx }) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { tasks, pull, directory, metrics } = ctx;

  /** The agent named in the request, if the bearer token is its own; it is seen now. */
  const asAgent = async (agentId: string, token: string | undefined) => {
    const agent = await directory.authenticate(agentId, token);
    directory.seen(agent.id);
    return agent;
  };
  const holder = (id: string): InstanceRef => ({ kind: 'agent', id });

  /** Dequeue long-polls open per agent on this process. */
  const openPolls = new Map<string, number>();

  // A static route: the router always prefers it to GET /api/v1/tasks/:id (tasks-admin.ts), so
  // that `dequeue` is never read as a task id.
  app.get(
    '/api/v1/tasks/dequeue',
    {
      schema: {
        summary: 'Pull agent long-poll: wait for a task and claim it',
        description:
          'Waits up to `wait` seconds (default 30, capped by api.maxDequeueWait) for a task of one of the agent’s types that it may take, and claims it ' +
          'through the task’s workflow. 200: the task, its prompt, attempt and lease — heartbeat before the lease expires. 204: nothing came. ' +
          'If the connection drops before the answer is written, the task is given back.',
        tags: ['pull agents'],
        security: agentAuth,
        querystring: T.Object(
          {
            agent_id: AgentId,
            wait: T.Optional(T.Number({ minimum: 0, maximum: 86_400, description: 'seconds' })),
          },
          { additionalProperties: false },
        ),
        response: { 200: GrantSchema, 204: T.Null(), ...errorResponses(400, 401, 429, 503) },
      },
    },
    async (request, reply) => {
      const agent = await asAgent(request.query.agent_id, bearerToken(request));
      // One token holds a bounded number of long-polls: it cannot tie up the process's connections.
      const open = openPolls.get(agent.id) ?? 0;
      if (open >= ctx.config.api.maxPollsPerAgent) {
        reply.header('retry-after', '1');
        throw new ApiError(429, 'too_many_polls', `agent ${agent.id} already has ${open} dequeue long-polls open here (api.maxPollsPerAgent)`);
      }
      openPolls.set(agent.id, open + 1);
      reply.raw.once('close', () => {
        const left = (openPolls.get(agent.id) ?? 1) - 1;
        if (left > 0) openPolls.set(agent.id, left);
        else openPolls.delete(agent.id);
      });
      const waitMs = Math.min(Math.round((request.query.wait ?? 30) * 1000), ctx.maxWaitMs);
      // 'close' before 'finish': the connection went away before the answer was written out.
      let finished = false;
      reply.raw.once('finish', () => (finished = true));
      const gone = new AbortController();
      const onClose = () => {
        if (!finished) gone.abort();
      };
      reply.raw.once('close', onClose);
      // It may have gone while the agent was being authenticated: then it waits for nothing.
      if (reply.raw.destroyed) gone.abort();
      const started = performance.now();
      const outcome = await pull.wait({ id: agent.id, types: agent.types }, waitMs, gone.signal);
      reply.raw.off('close', onClose);
      metrics.dequeueWait.observe({ outcome: outcome.kind }, (performance.now() - started) / 1000);
      if (outcome.kind === 'task') {
        const { grant } = outcome;
        if (gone.signal.aborted || reply.raw.destroyed) {
          await pull.giveBack(grant, agent);
          return reply.code(204).send(null);
        }
        // If the connection dies before the answer is fully written, give the task back.
        reply.raw.once('close', () => {
          if (!finished) void pull.giveBack(grant, agent);
        });
        request.log.info({ taskId: grant.taskId, agent: agent.id, attempt: grant.attempt }, 'task dequeued');
        return reply.code(200).send(grantView(grant, ctx.taskOptions.leaseMs));
      }
      if (outcome.kind === 'shutdown') {
        reply.header('retry-after', '1');
        throw new ApiError(503, 'shutting_down', 'this API process is shutting down; poll again');
      }
      return reply.code(204).send(null);
    },
  );

  const holderBody = T.Object(HolderFields, { additionalProperties: false });
  const heartbeatBody = T.Object({ ...HolderFields, ...OutputField }, { additionalProperties: false });

  app.post(
    '/api/v1/tasks/:id/heartbeat',
    {
      schema: {
        summary: 'Keep the lease; the answer says when cancel was requested',
        description: 'With `output`, the command’s output since the last heartbeat: the task’s live log.',
        tags: ['pull agents'],
        security: agentAuth,
        params: TaskIdParam,
        body: heartbeatBody,
        response: {
          200: T.Object({
            task_id: T.String(),
            attempt: T.Integer(),
            lease_expires_at: T.String(),
            lease_ms_left: T.Integer({
              description: 'the lease left when the task answered: added to the time the agent sent this heartbeat, a time by which the lease has surely not run out (by the agent’s own clock)',
            }),
            cancel_requested: T.Boolean(),
          }),
          ...errorResponses(400, 401, 404, 409, 503),
        },
      },
    },
    async (request) => {
      const agent = await asAgent(request.body.agent_id, bearerToken(request));
      const answer = await tasks.heartbeat(request.params.id, holder(agent.id), request.body.attempt, { output: request.body.output });
      return {
        task_id: request.params.id,
        attempt: request.body.attempt,
        lease_expires_at: answer.leaseExpiresAt,
        lease_ms_left: answer.leaseMsLeft,
        cancel_requested: answer.cancelRequested,
      };
    },
  );

  app.post(
    '/api/v1/tasks/:id/complete',
    {
      schema: {
        summary: 'Report the result (success or fork)',
        tags: ['pull agents'],
        security: agentAuth,
        params: TaskIdParam,
        body: T.Object(
          {
            ...HolderFields,
            outcome: T.Optional(T.Union([T.Literal('success'), T.Literal('fork')], { default: 'success' })),
            summary: T.String({ maxLength: 100_000 }),
            branch: T.Optional(T.String({ minLength: 1, maxLength: 250 })),
            rev: T.Optional(T.String({ minLength: 1, maxLength: 100 })),
            details: T.Optional(T.Record(T.String(), T.Unknown())),
            ...OutputField,
          },
          { additionalProperties: false },
        ),
        response: { 200: TaskViewSchema, ...errorResponses(400, 401, 404, 409, 503) },
      },
    },
    async (request) => {
      const { body } = request;
      const agent = await asAgent(body.agent_id, bearerToken(request));
      const result = {
        outcome: body.outcome ?? 'success',
        summary: body.summary,
        ...(body.branch ? { branch: body.branch } : {}),
        ...(body.rev ? { rev: body.rev } : {}),
        ...(body.details ? { details: body.details } : {}),
      };
      const status = await tasks.complete(request.params.id, holder(agent.id), body.attempt, result, body.output);
      return taskView(status);
    },
  );

  app.post(
    '/api/v1/tasks/:id/fail',
    {
      schema: {
        summary: 'Report failure',
        tags: ['pull agents'],
        security: agentAuth,
        params: TaskIdParam,
        body: T.Object(
          { ...HolderFields, summary: T.String({ maxLength: 100_000 }), details: T.Optional(T.Record(T.String(), T.Unknown())), ...OutputField },
          { additionalProperties: false },
        ),
        response: { 200: TaskViewSchema, ...errorResponses(400, 401, 404, 409, 503) },
      },
    },
    async (request) => {
      const { body } = request;
      const agent = await asAgent(body.agent_id, bearerToken(request));
      return taskView(await tasks.fail(request.params.id, holder(agent.id), body.attempt, body.summary, body.details, body.output));
    },
  );

  app.post(
    '/api/v1/tasks/:id/release',
    {
      schema: {
        summary: 'Give the task back untried (agent shutting down)',
        tags: ['pull agents'],
        security: agentAuth,
        params: TaskIdParam,
        body: holderBody,
        response: { 200: TaskViewSchema, ...errorResponses(400, 401, 404, 409, 503) },
      },
    },
    async (request) => {
      const agent = await asAgent(request.body.agent_id, bearerToken(request));
      return taskView(await tasks.release(request.params.id, holder(agent.id), request.body.attempt));
    },
  );
};
