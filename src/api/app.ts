// The Fastify app factory: `drover api` and `drover dev` serve it; tests build it with fake parts.
// One plugin per resource; every error is JSON `{code, message}`; the OpenAPI document is
// generated from the route schemas and browsable at /docs.
import { installAuthFailureLimit } from './auth-failures';
import { pagesPlugin } from './pages';
import { budgetHold, CostLedgerReader, dailyBudget } from '../costs';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import { TypeBoxValidatorCompiler } from '@fastify/type-provider-typebox';
import type { Client } from '@temporalio/client';
import type { NativeConnection } from '@temporalio/worker';
import Fastify, { type FastifyInstance, type FastifyPluginAsync, type FastifyServerOptions } from 'fastify';
import { durationMs, taskDefaults, type DroverConfig } from '../config';
import { ForgejoApi } from '../forgejo/api';
import { connectNative } from '../temporal-connection';
import type { ClaimGrant } from '../model';
import { TaskClient } from '../task-client';
import { agentsPlugin } from './agents';
import { adminGuard, hashToken } from './auth';
import type { ApiContext, HostPresence, PluginOptions } from './context';
import { renewAfterOutages } from '../workers/renewable-workers';
import { PullMatcher, type PullAgent } from './pull-matcher';
import { AgentDirectory } from './directory';
import { ApiError, frameworkErrors, installErrorHandlers } from './errors';
import { healthPlugin } from './health';
import { hostsPlugin } from './hosts';
import { logsPlugin } from './logs';
import { sessionsPlugin } from './sessions';
import { createHostPresence } from '../host-presence';
import { ApiMetrics } from './metrics';
import { TaskTallyReader } from '../task-tally';
import { statsPlugin } from './stats';
import { tasksAdminPlugin } from './tasks-admin';
import { tasksAgentsPlugin } from './tasks-agents';
import { tasksCoordinatorPlugin } from './tasks-coordinator';
import { webhooksPlugin } from './webhooks';
import { TemporalCallObserver } from '../temporal-health';

export interface AppDeps {
  config: DroverConfig;
  /** Temporal client on the config's namespace. */
  client: Client;
  tasks?: TaskClient;
  /** Fastify's logger: `false` in tests, a pino config or instance otherwise. */
  logger?: FastifyServerOptions['logger'] | FastifyServerOptions['loggerInstance'];
  /** Live SSH host presence for GET /api/v1/hosts and stats (the SSH side provides it). */
  hostPresence?: HostPresence;
  /**
   * More resource plugins, registered like the built-in ones with `{ ctx }` — the place for
   * `src/api/logs.ts` (GET /api/v1/tasks/{id}/logs).
   */
  plugins?: Array<FastifyPluginAsync<PluginOptions>>;
  /** Agent registry workflow id (tests isolate theirs). */
  registryWorkflowId?: string;
  /** Test seam: runs after a dequeue claim is won, before the grant is handed to the agent. */
  afterClaim?: (grant: ClaimGrant, agent: PullAgent) => Promise<void>;
  /** The pull queues' worker connection (default: to config.temporal). */
  connectWorker?: () => Promise<NativeConnection>;
  /** What `client`'s calls meet (connectClient's observer); default: one that knows nothing. */
  temporalHealth?: TemporalCallObserver;
}

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const { config, client } = deps;
  const loggerOption =
    deps.logger === undefined
      ? { logger: { level: config.log.level } }
      : deps.logger && typeof (deps.logger as { child?: unknown }).child === 'function'
        ? { loggerInstance: deps.logger as FastifyServerOptions['loggerInstance'] }
        : { logger: deps.logger as FastifyServerOptions['logger'] };
  const app = Fastify({
    ...loggerOption,
    bodyLimit: config.api.bodyLimitBytes,
    // Task ids are up to 200 characters.
    routerOptions: { maxParamLength: 300 },
    frameworkErrors,
    forceCloseConnections: 'idle',
    // While closing, requests still get Drover's own answers (dequeue: 503 shutting_down).
    return503OnClosing: false,
  });
  app.setValidatorCompiler(TypeBoxValidatorCompiler);
  installErrorHandlers(app);
  await installAuthFailureLimit(app, { config });

  // JSON bodies through Fastify's own parser (secure-json-parse: a body that tries to poison
  // prototypes with __proto__ or constructor.prototype is refused); malformed → 400 bad_json.
  // An empty body reads as {}, so that body-less POSTs validate.
  const parseJson = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser(['application/json']);
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (request, body, done) => {
    const text = typeof body === 'string' ? body : body.toString('utf8');
    if (text.trim() === '') return done(null, {});
    parseJson(request, text, (error, parsed) => {
      if (error) done(new ApiError(400, 'bad_json', `the body is not valid JSON: ${error.message}`), undefined);
      else done(null, parsed);
    });
  });
  app.addHook('preValidation', async (request) => {
    if (request.body === undefined && (request.method === 'POST' || request.method === 'PUT' || request.method === 'DELETE')) request.body = {};
  });

  const tasks = deps.tasks ?? new TaskClient(client);
  const costs = new CostLedgerReader(client);
  // Task counts for the stats and /metrics: the task tallies, not visibility.
  const taskTally = new TaskTallyReader({ client, tasks, types: config.types, log: app.log });
  const metrics = new ApiMetrics(() => taskTally.read(), costs);
  metrics.install(app);
  const temporalHealth = deps.temporalHealth ?? new TemporalCallObserver();
  metrics.observeTemporal(temporalHealth);
  const directory = new AgentDirectory({ config, client, log: app.log, workflowId: deps.registryWorkflowId });
  const pull = new PullMatcher({
    connect: deps.connectWorker ?? (() => connectNative(config.temporal)),
    namespace: config.temporal.namespace,
    tasks,
    log: app.log,
    metrics: metrics.pull(),
    afterClaim: deps.afterClaim,
  });
  // The SDK's pollers back off up to 10 s while Temporal is down: fresh ones once it is back.
  const stopRenewing = renewAfterOutages(temporalHealth, () => pull.renew());
  const ctx: ApiContext = {
    config,
    client,
    tasks,
    directory,
    pull,
    metrics,
    forgejo: config.forgejo.url ? new ForgejoApi({ url: config.forgejo.url, token: config.forgejo.token, timeoutMs: durationMs(config.forgejo.timeout) }) : undefined,
    admin: adminGuard(config.api.adminToken ? hashToken(config.api.adminToken) : undefined),
    maxWaitMs: durationMs(config.api.maxDequeueWait),
    taskOptions: taskDefaults(config),
    costs,
    taskTally,
    async budgetHold(repo) {
      if (dailyBudget(config.budgets.dailyUsd, repo) === undefined) return undefined; // no ledger read without a budget
      return budgetHold(await costs.read(), config.budgets.dailyUsd, repo);
    },
    // Presence that worker processes publish to the host registry (src/host-presence.ts).
    hostPresence: deps.hostPresence ?? createHostPresence(client),
    temporalHealth,
  };

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Drover',
        description: 'Forgejo webhooks, the pull-agent protocol, and the coordinator’s API. Every error is `{code, message}`.',
        version: '0.1.0',
      },
      components: {
        securitySchemes: {
          adminToken: { type: 'http', scheme: 'bearer', description: 'api.adminToken' },
          agentToken: { type: 'http', scheme: 'bearer', description: 'the pull agent’s own token' },
        },
      },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  const options: PluginOptions = { ctx };
  await app.register(healthPlugin, options);
  await app.register(webhooksPlugin, options);
  await app.register(tasksAdminPlugin, options);
  await app.register(tasksAgentsPlugin, options);
  await app.register(tasksCoordinatorPlugin, options);
  await app.register(agentsPlugin, options);
  await app.register(hostsPlugin, options);
  await app.register(logsPlugin, options);
  await app.register(sessionsPlugin, options);
  await app.register(statsPlugin, options);
  await app.register(pagesPlugin, options);
  // Further resources (the SSH side's logs plugin) register here, with the same context.
  for (const plugin of deps.plugins ?? []) await app.register(plugin, options);

  // End long-polls before Fastify waits for in-flight requests; flush presence last.
  app.addHook('preClose', async () => {
    stopRenewing();
    await pull.close();
  });
  app.addHook('onClose', async () => {
    await directory.close();
  });
  return app;
}
