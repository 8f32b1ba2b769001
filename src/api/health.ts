// Liveness, readiness (Temporal reachable) and Prometheus metrics.
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { PluginOptions } from './context';
import { ApiError } from './errors';
import { ErrorSchema } from './schemas';

export const healthPlugin: FastifyPluginAsync<PluginOptions> = async (fastify, { ctx }) => {
  const app = fastify.withTypeProvider<TypeBoxTypeProvider>();

  app.get(
    '/healthz',
    { schema: { summary: 'Liveness', tags: ['operators'], response: { 200: T.Object({ status: T.Literal('ok') }) } } },
    async () => ({ status: 'ok' as const }),
  );

  app.get(
    '/readyz',
    {
      schema: {
        summary: 'Readiness: Temporal is reachable (503 temporal_unavailable at once while the client finds it unreachable)',
        tags: ['operators'],
        response: { 200: T.Object({ status: T.Literal('ready'), temporal: T.String(), namespace: T.String() }), 503: ErrorSchema },
      },
    },
    async (_request, reply) => {
      // The client's calls already found Temporal unreachable: say so at once (the observer's probe
      // notices when it is back). Answered, not thrown: the observer logged the outage once, and a
      // load balancer's probes would log an error each.
      const temporal = ctx.temporalHealth?.state();
      if (temporal?.status === 'unreachable') {
        const since = temporal.since ?? Date.now();
        return reply.code(503).send({
          code: 'temporal_unavailable',
          message: `Temporal has been unreachable since ${new Date(since).toISOString()} (${Math.round((Date.now() - since) / 1000)} s): ${temporal.lastError ?? 'no answer'}`,
        });
      }
      try {
        await ctx.client.connection.withDeadline(Date.now() + 3_000, () => ctx.client.workflowService.getSystemInfo({}));
      } catch (error) {
        throw new ApiError(503, 'temporal_unavailable', `Temporal is not reachable: ${(error as Error).message}`);
      }
      return { status: 'ready' as const, temporal: ctx.config.temporal.address, namespace: ctx.config.temporal.namespace };
    },
  );

  app.get('/metrics', { schema: { summary: 'Prometheus metrics', tags: ['operators'], produces: ['text/plain'] } }, async (_request, reply) => {
    const body = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(body);
  });
};
