// GET /api/v1/hosts — SSH hosts from the config. Live presence (online, slots in use) comes from
// ApiContext.hostPresence, which the SSH side supplies (buildApp's `hostPresence`).
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import type { PluginOptions } from './context';
import { errorResponses } from './schemas';

const HostView = T.Object({
  id: T.String(),
  address: T.String(),
  port: T.Integer(),
  types: T.Array(T.String()),
  slots: T.Integer(),
  online: T.Union([T.Boolean(), T.Null()], { description: 'null when this API process cannot tell' }),
  slots_used: T.Union([T.Integer(), T.Null()]),
});

export const hostsPlugin: FastifyPluginAsync<PluginOptions> = async (fastify, { ctx }) => {
  fastify.withTypeProvider<TypeBoxTypeProvider>().get(
    '/api/v1/hosts',
    {
      onRequest: ctx.admin,
      schema: {
        summary: 'SSH hosts from the config, with presence where known',
        tags: ['agents'],
        security: [{ adminToken: [] }],
        response: { 200: T.Object({ hosts: T.Array(HostView) }), ...errorResponses(401, 403) },
      },
    },
    async () => ({
      hosts: await Promise.all(
        ctx.config.hosts.map(async (host) => {
          const state = await Promise.resolve(ctx.hostPresence?.(host.id)).catch(() => undefined);
          return {
            id: host.id,
            address: host.address,
            port: host.port,
            types: host.types,
            slots: host.slots,
            online: state ? state.online : null,
            slots_used: state?.slotsUsed ?? null,
          };
        }),
      ),
    }),
  );
};
