// Tasks for the coordinator (admin token): reserve a pending task for a host or agent, cancel one.
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { Claimant } from '../model';
import { TaskError } from '../task-errors';
import type { PluginOptions } from './context';
import { ApiError, fromTaskError } from './errors';
import { AgentId, errorResponses, IdempotencyHeaders, TaskIdParam, TaskViewSchema, taskView } from './schemas';

const admin = [{ adminToken: [] }];

export const tasksCoordinatorPlugin: FastifyPluginAsync<PluginOptions> = async (fastify, { ctx }) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { tasks, directory } = ctx;

  // Every route here is the admin's.
  app.addHook('onRequest', ctx.admin);

  app.post(
    '/api/v1/tasks/:id/assign',
    {
      schema: {
        summary: 'Reserve a pending task for a named SSH host or pull agent',
        description:
          'The execution mode follows from the id: an SSH host → ssh_cli, a pull agent → http_pull; a given execution_mode that contradicts it is refused (400). ' +
          'A request sent again with the same Idempotency-Key header (after a lost answer) is the same assign, answered as the first was. ' +
          '404 for an unknown agent or task; 400 when the task’s state does not allow it (not pending, closed, wrong type).',
        tags: ['coordinator'],
        security: admin,
        params: TaskIdParam,
        headers: IdempotencyHeaders,
        body: T.Object(
          { agent_id: AgentId, execution_mode: T.Optional(T.Union([T.Literal('ssh_cli'), T.Literal('http_pull')])) },
          { additionalProperties: false },
        ),
        response: { 200: TaskViewSchema, ...errorResponses(400, 401, 403, 404, 503) },
      },
    },
    async (request) => {
      const { agent_id: targetId, execution_mode: requested } = request.body;
      const host = directory.hosts.get(targetId);
      const agent = host ? undefined : await directory.find(targetId);
      if (!host && !agent) throw new ApiError(404, 'agent_not_found', `no SSH host or pull agent ${targetId}`);
      const mode = host ? 'ssh_cli' : 'http_pull';
      if (requested && requested !== mode) {
        throw new ApiError(400, 'execution_mode_mismatch', `${targetId} is ${host ? 'an SSH host (ssh_cli)' : 'a pull agent (http_pull)'}, not ${requested}`);
      }
      const target: Claimant = host ? { kind: 'host', id: host.id, types: host.types } : { kind: 'agent', id: agent!.id, types: agent!.types };
      try {
        return taskView(await tasks.assign(request.params.id, target, 'api', request.headers['idempotency-key']));
      } catch (error) {
        if (error instanceof TaskError) {
          throw fromTaskError(error, { task_not_pending: 400, task_closed: 400, wrong_agent_type: 400, reserved_for_other: 400 });
        }
        throw error;
      }
    },
  );

  app.post(
    '/api/v1/tasks/:id/cancel',
    {
      schema: {
        summary: 'Cancel a task',
        description:
          'A pending task closes at once; a running one is stopped (SSH: the process is killed; pull agent: told at its next heartbeat, and its lease ' +
          'is kept for tasks.cancelGrace at most). A task is cancelled once: the first reason stands, and a cancel sent again while it is in force ' +
          'is answered as the first was. The reason is shown in the task view and the closing comment.',
        tags: ['coordinator'],
        security: admin,
        params: TaskIdParam,
        body: T.Object({ reason: T.Optional(T.String({ maxLength: 1_000 })) }, { additionalProperties: false }),
        response: { 200: TaskViewSchema, ...errorResponses(400, 401, 403, 404, 409, 503) },
      },
    },
    async (request) => taskView(await tasks.cancel(request.params.id, request.body.reason, 'api')),
  );
};
