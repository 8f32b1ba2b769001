// Liveness, readiness (Temporal reachable) and Prometheus metrics.
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { PluginOptions } from './context';
import { ApiError } from './errors';
import { errorResponses } from './schemas';

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
        summary: 'Readiness: Temporal is reachable',
        tags: ['operators'],
        response: { 200: T.Object({ status: T.Literal('ready'), temporal: T.String(), namespace: T.String() }), ...errorResponses(503) },
      },
    },
    async () => {
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
