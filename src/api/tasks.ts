// Tasks: enqueue by hand, list and inspect (admin); the pull-agent protocol — dequeue, heartbeat,
// complete, fail, release (agent token); assign and cancel (admin).
import { remoteUrlTemplate } from '../config';
import { taskCheckout } from '../workspace/plan';
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { isGrpcServiceError } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import type { Claimant, InstanceRef } from '../model';
import { DROVER_ENTITY_ID_PREFIX, isDroverEntityId, taskId as makeTaskId } from '../names';
import { renderPrompt } from '../prompts';
import { TaskError } from '../task-errors';
import { bearerToken } from './auth';
import type { PluginOptions } from './context';
import { ApiError, fromTaskError } from './errors';
import {
  AgentId,
  AgentTypeName,
  errorResponses,
  GrantSchema,
  grantView,
  HolderFields,
  IdempotencyHeaders,
  OutputField,
  KindSchema,
  ModeSchema,
  StateSchema,
  TaskIdParam,
  TaskSummarySchema,
  summaryView,
  TaskViewSchema,
  taskView,
} from './schemas';

const admin = [{ adminToken: [] }];

/**
 * Page tokens are Temporal's, with a MAC: a token that is not one we issued is refused with 400
 * instead of reaching Temporal (which answers garbage with errors its client retries for long).
 * The key derives from the admin token, shared by every API process.
 */
function pageTokenCodec(adminToken: string | undefined) {
  const key = createHmac('sha256', 'drover-page-token').update(adminToken ?? '').digest();
  const mac = (raw: string) => createHmac('sha256', key).update(raw).digest().subarray(0, 12);
  return {
    seal: (raw: string) => `${raw}.${mac(raw).toString('base64url')}`,
    open: (token: string): string => {
      const [raw, tag] = token.split('.');
      const given = Buffer.from(tag ?? '', 'base64url');
      if (!raw || given.length !== 12 || !timingSafeEqual(given, mac(raw))) throw new ApiError(400, 'bad_page_token', 'page_token is not one this API issued');
      return raw;
    },
  };
}
const agentAuth = [{ agentToken: [] }];
const HttpUrl = T.String({ pattern: '^https?://[^\\s]{1,2000}$', maxLength: 2048 });
const REF_PATTERN = '^[A-Za-z0-9._/+-]{1,200}$';

export const tasksPlugin: FastifyPluginAsync<PluginOptions> = async (fastify, { ctx }) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { tasks, hub, directory, config, metrics } = ctx;

  const asAgent = async (agentId: string, token: string | undefined) => {
    const agent = await directory.authenticate(agentId, token);
    directory.seen(agent.id);
    return agent;
  };
  const holder = (id: string): InstanceRef => ({ kind: 'agent', id });
  const pageTokens = pageTokenCodec(config.api.adminToken);

  // ---- enqueue, list, inspect ------------------------------------------------------------------

  app.post(
    '/api/v1/tasks',
    {
      onRequest: ctx.admin,
      schema: {
        summary: 'Enqueue a task by hand',
        tags: ['tasks'],
        security: admin,
        body: T.Object(
          {
            agent_type: AgentTypeName,
            kind: T.Optional(KindSchema),
            title: T.String({ minLength: 1, maxLength: 500 }),
            prompt: T.Optional(T.String({ minLength: 1, maxLength: 100_000, description: 'default: the kind’s prompt template' })),
            body: T.Optional(T.String({ maxLength: 100_000, description: 'text for the template’s {{body}}' })),
            repo: T.Optional(T.String({ pattern: '^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$' })),
            number: T.Optional(T.Integer({ minimum: 1, maximum: 2_147_483_647 })),
            url: T.Optional(HttpUrl),
            callback_url: T.Optional(HttpUrl),
            session_key: T.Optional(T.String({ minLength: 1, maxLength: 200 })),
            task_id: T.Optional(T.String({ pattern: '^[A-Za-z0-9_.:-]{1,200}$', description: 'default: kind:owner:repo:number:agent_type, or kind:<uuid> without a repository' })),
            checkout: T.Optional(
              T.Object(
                {
                  ref: T.Optional(T.String({ pattern: REF_PATTERN, description: 'custom: the branch, tag or commit the agent works on (detached)' })),
                  base: T.Optional(T.String({ pattern: REF_PATTERN, description: 'implement: the branch the task branch starts from (default: the remote’s HEAD)' })),
                  branch: T.Optional(T.String({ pattern: REF_PATTERN, description: 'pull-request kinds: the head branch' })),
                  sha: T.Optional(T.String({ pattern: '^[0-9a-fA-F]{7,64}$', description: 'pull-request kinds: the head commit' })),
                },
                { additionalProperties: false, description: 'what the task’s workspace checks out (needs repo, and workspaces.remoteUrl or forgejo.url)' },
              ),
            ),
            options: T.Optional(
              T.Object(
                {
                  match_window_ms: T.Optional(T.Integer({ minimum: 0, maximum: 86_400_000 })),
                  lease_ms: T.Optional(T.Integer({ minimum: 1_000, maximum: 86_400_000 })),
                  max_attempts: T.Optional(T.Integer({ minimum: 1, maximum: 100 })),
                  run_timeout_ms: T.Optional(T.Integer({ minimum: 1_000, maximum: 7 * 86_400_000 })),
                },
                { additionalProperties: false },
              ),
            ),
          },
          { additionalProperties: false },
        ),
        response: {
          201: T.Object({ task_id: T.String(), created: T.Boolean() }),
          200: T.Object({ task_id: T.String(), created: T.Boolean() }),
          ...errorResponses(400, 401, 403, 413, 415, 422, 503),
        },
      },
    },
    async (request, reply) => {
      const body = request.body;
      if (!config.types.includes(body.agent_type)) {
        throw new ApiError(422, 'unknown_agent_type', `unknown agent type ${body.agent_type} (known: ${config.types.join(', ')})`, { type: body.agent_type });
      }
      if ((body.repo === undefined) !== (body.number === undefined)) throw new ApiError(400, 'bad_request', 'give both repo and number, or neither');
      if (body.task_id === 'dequeue') throw new ApiError(400, 'bad_request', 'task_id dequeue is taken by GET /api/v1/tasks/dequeue');
      if (body.task_id && isDroverEntityId(body.task_id)) {
        throw new ApiError(400, 'bad_request', `task ids starting with ${DROVER_ENTITY_ID_PREFIX} are Drover's own workflows`);
      }
      const kind = body.kind ?? 'custom';
      const repo = body.repo ?? '';
      const checkout = taskCheckout(remoteUrlTemplate(config), repo, body.checkout);
      const hold = await ctx.budgetHold(repo);
      if (body.checkout) {
        if (!checkout) throw new ApiError(400, 'bad_request', 'checkout needs a repo, and workspaces.remoteUrl or forgejo.url in the config');
        const unsafe = (['ref', 'base', 'branch'] as const).find((key) => body.checkout![key] !== undefined && checkout[key] === undefined);
        if (unsafe) throw new ApiError(400, 'bad_request', `checkout.${unsafe} is not a valid git ref name`);
      }
      const number = body.number ?? 0;
      const id = body.task_id ?? (repo ? makeTaskId(kind, repo, number, body.agent_type) : `${kind}:${randomUUID()}`);
      const prompt = body.prompt ?? renderPrompt(kind, { kind, agent_type: body.agent_type, repo, number: number || undefined, title: body.title, body: body.body, url: body.url }, config.prompts);
      const options = { ...ctx.taskOptions };
      if (body.options?.match_window_ms !== undefined) options.matchWindowMs = body.options.match_window_ms;
      if (body.options?.lease_ms !== undefined) options.leaseMs = body.options.lease_ms;
      if (body.options?.max_attempts !== undefined) options.maxAttempts = body.options.max_attempts;
      if (body.options?.run_timeout_ms !== undefined) options.runTimeoutMs = body.options.run_timeout_ms;
      const started = await tasks.start(
        {
          agentType: body.agent_type,
          kind,
          repo,
          number,
          title: body.title,
          prompt,
          ...(body.url ? { url: body.url } : {}),
          ...(body.callback_url ? { callbackUrl: body.callback_url } : {}),
          ...(body.session_key ? { sessionKey: body.session_key } : {}),
          ...(checkout ? { checkout } : {}),
          ...(hold ? { hold } : {}),
          options,
        },
        { taskId: id },
      );
      hub.hint({ taskId: started.taskId, agentType: body.agent_type });
      return reply.code(started.created ? 201 : 200).send({ task_id: started.taskId, created: started.created });
    },
  );

  app.get(
    '/api/v1/tasks',
    {
      onRequest: ctx.admin,
      schema: {
        summary: 'List tasks (newest first), from Temporal visibility',
        tags: ['tasks'],
        security: admin,
        querystring: T.Object(
          {
            state: T.Optional(StateSchema),
            mode: T.Optional(ModeSchema),
            type: T.Optional(AgentTypeName),
            kind: T.Optional(KindSchema),
            repo: T.Optional(T.String({ pattern: '^[A-Za-z0-9_.-]{1,100}/[A-Za-z0-9_.-]{1,100}$' })),
            assignee: T.Optional(AgentId),
            open: T.Optional(T.Boolean({ description: 'only tasks whose workflow is still open' })),
            page_size: T.Optional(T.Integer({ minimum: 1, maximum: 500, default: 50 })),
            page_token: T.Optional(T.String({ pattern: '^[A-Za-z0-9_-]{1,8192}\\.[A-Za-z0-9_-]{16}$', description: 'next_page_token of the previous page' })),
          },
          { additionalProperties: false },
        ),
        response: {
          200: T.Object({ tasks: T.Array(TaskSummarySchema), next_page_token: T.Union([T.String(), T.Null()]) }),
          ...errorResponses(400, 401, 403, 503),
        },
      },
    },
    async (request) => {
      const q = request.query;
      const pageToken = q.page_token ? pageTokens.open(q.page_token) : undefined;
      try {
        const page = await tasks.listPage(
          { state: q.state, mode: q.mode, agentType: q.type, kind: q.kind, repo: q.repo, assignee: q.assignee, openOnly: q.open },
          { pageSize: q.page_size ?? 50, pageToken },
        );
        return { tasks: page.tasks.map(summaryView), next_page_token: page.nextPageToken ? pageTokens.seal(page.nextPageToken) : null };
      } catch (error) {
        // INVALID_ARGUMENT: a page token from another query.
        if (isGrpcServiceError(error) && error.code === 3) throw new ApiError(400, 'bad_page_token', 'page_token is not valid for this query');
        throw error;
      }
    },
  );

  // ---- the pull-agent protocol -----------------------------------------------------------------
  /** Dequeue long-polls open per agent on this process. */
  const openPolls = new Map<string, number>();

  // Registered before /tasks/:id so that `dequeue` is never read as a task id.

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
      const outcome = await hub.wait({ id: agent.id, types: agent.types }, waitMs, gone.signal);
      reply.raw.off('close', onClose);
      metrics.dequeueWait.observe({ outcome: outcome.kind }, (performance.now() - started) / 1000);
      if (outcome.kind === 'task') {
        const { grant } = outcome;
        if (gone.signal.aborted || reply.raw.destroyed) {
          await hub.giveBack(grant, agent);
          return reply.code(204).send(null);
        }
        // If the connection dies before the answer is fully written, give the task back.
        reply.raw.once('close', () => {
          if (!finished) void hub.giveBack(grant, agent);
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
      const status = await tasks.release(request.params.id, holder(agent.id), request.body.attempt);
      if (status.state === 'pending') hub.hint({ taskId: status.taskId, agentType: status.input.agentType });
      return taskView(status);
    },
  );

  // ---- inspect, assign, cancel -----------------------------------------------------------------

  app.get(
    '/api/v1/tasks/:id',
    {
      onRequest: ctx.admin,
      schema: {
        summary: 'Inspect a task',
        tags: ['tasks'],
        security: admin,
        params: TaskIdParam,
        response: { 200: TaskViewSchema, ...errorResponses(400, 401, 403, 404, 503) },
      },
    },
    async (request) => taskView(await tasks.status(request.params.id)),
  );

  app.post(
    '/api/v1/tasks/:id/assign',
    {
      onRequest: ctx.admin,
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
        const status = await tasks.assign(request.params.id, target, 'api', request.headers['idempotency-key']);
        if (!host) hub.hint({ taskId: status.taskId, agentType: status.input.agentType, assignee: target.id });
        return taskView(status);
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
      onRequest: ctx.admin,
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
