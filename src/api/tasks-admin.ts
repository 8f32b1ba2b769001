// Tasks for the operator (admin token): enqueue by hand, list, and inspect one task.
import { kindPriority, remoteUrlTemplate } from '../config';
import { PRIORITY_RANGE } from '../workflows/priority';
import { taskCheckout } from '../workspace/plan';
import { createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { isGrpcServiceError } from '@temporalio/client';
import type { FastifyPluginAsync } from 'fastify';
import { DROVER_ENTITY_ID_PREFIX, isDroverEntityId, taskId as makeTaskId } from '../names';
import { renderPrompt } from '../prompts';
import type { PluginOptions } from './context';
import { ApiError } from './errors';
import {
  AgentId,
  AgentTypeName,
  errorResponses,
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
const HttpUrl = T.String({ pattern: '^https?://[^\\s]{1,2000}$', maxLength: 2048 });
const REF_PATTERN = '^[A-Za-z0-9._/+-]{1,200}$';

export const tasksAdminPlugin: FastifyPluginAsync<PluginOptions> = async (fastify, { ctx }) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();
  const { tasks, config } = ctx;
  const pageTokens = pageTokenCodec(config.api.adminToken);

  // Every route here is the admin's.
  app.addHook('onRequest', ctx.admin);

  app.post(
    '/api/v1/tasks',
    {
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
            priority: T.Optional(
              T.Integer({
                minimum: PRIORITY_RANGE.first,
                maximum: PRIORITY_RANGE.last,
                description: 'Temporal priority key, 1 first … 5 last (default: the kind’s, tasks.priorities)',
              }),
            ),
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
          priority: body.priority ?? kindPriority(config, kind),
          options,
        },
        { taskId: id },
      );
      return reply.code(started.created ? 201 : 200).send({ task_id: started.taskId, created: started.created });
    },
  );

  app.get(
    '/api/v1/tasks',
    {
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

  // GET /api/v1/tasks/dequeue (tasks-agents.ts) is a static route: the router always prefers it
  // to this parametric one, whatever the registration order.
  app.get(
    '/api/v1/tasks/:id',
    {
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
};
