// POST /api/v1/webhooks/forgejo — Forgejo and Gitea deliveries become tasks (DESIGN.md's mapping).
// The signature is checked over the raw body before anything in it is read.
import { kindPriority, remoteUrlTemplate } from '../config';
import { DeliveryReceipts, deliveryKey } from '../deliveries';
import { taskCheckout } from '../workspace/plan';
import { Type as T } from '@sinclair/typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { FastifyPluginAsync } from 'fastify';
import { classify, LookupError, mapDelivery, readDeliveryHeaders, verifySignature } from '../forgejo/events';
import { ApiError } from './errors';
import type { PluginOptions } from './context';
import { errorResponses } from './schemas';

const Accepted = T.Object({
  status: T.Union([T.Literal('created'), T.Literal('existing')]),
  task_id: T.String(),
  created: T.Boolean(),
  kind: T.String(),
  agent_type: T.String(),
  event: T.String(),
  delivery: T.Union([T.String(), T.Null()]),
});
const Ignored = T.Object({
  status: T.Union([T.Literal('ignored'), T.Literal('duplicate')], { description: 'duplicate: this delivery started a task already (task_id names it)' }),
  reason: T.String(),
  task_id: T.Optional(T.String()),
  event: T.String(),
  delivery: T.Union([T.String(), T.Null()]),
});

/** The `event` label values of drover_webhooks_total: the mapped events, and `other`. */
const METRIC_EVENTS = new Set(['issues', 'pull_request', 'pull_request_approved', 'pull_request_rejected', 'status']);

function parseJson(text: string): unknown {
  return JSON.parse(text, (key, value: unknown) => (key === '__proto__' ? undefined : value));
}

export const webhooksPlugin: FastifyPluginAsync<PluginOptions> = async (app, { ctx }) => {
  const { config, tasks, metrics } = ctx;
  const deliveries = new DeliveryReceipts(ctx.client);
  // Keep the raw bytes: the signature is over them. Forgejo sends JSON, or a form with `payload=`.
  app.removeContentTypeParser(['application/json', 'text/plain']);
  app.addContentTypeParser(['application/json', 'application/x-www-form-urlencoded'], { parseAs: 'buffer' }, (_request, body, done) => done(null, body));

  app.withTypeProvider<TypeBoxTypeProvider>().post(
    '/api/v1/webhooks/forgejo',
    {
      schema: {
        summary: 'Forgejo / Gitea webhook',
        description:
          'Deliveries exactly as Forgejo and Gitea send them (X-Forgejo-Event, X-Forgejo-Event-Type, X-Forgejo-Delivery, X-Forgejo-Signature or the X-Gitea-* equivalents; JSON body, or form with `payload`). ' +
          'With webhook.secret set, the hex HMAC-SHA256 of the raw body must match. Mapped events: issue assigned (implement), review requested (review), ' +
          'review requesting changes (address_review), review approving (merge), commit status failure/error on an open pull request head (fix_ci). ' +
          'A delivery that started a task before (a redelivery, a replay: the same signed body) answers 200 `duplicate` and starts nothing, for as long as the namespace retains closed workflows.',
        tags: ['webhooks'],
        headers: T.Object({
          'x-forgejo-event': T.Optional(T.String()),
          'x-forgejo-event-type': T.Optional(T.String()),
          'x-forgejo-delivery': T.Optional(T.String()),
          'x-forgejo-signature': T.Optional(T.String()),
        }),
        response: {
          202: Accepted,
          200: Ignored,
          ...errorResponses(400, 401, 413, 415, 422, 502, 503),
        },
      },
    },
    async (request, reply) => {
      const headers = readDeliveryHeaders(request.headers as Record<string, string | string[] | undefined>);
      const raw = Buffer.isBuffer(request.body) ? request.body : Buffer.alloc(0);
      const isForm = (request.headers['content-type'] ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded');
      // Forgejo signs the payload itself; for form deliveries that is the `payload` field.
      const signed = isForm ? Buffer.from(new URLSearchParams(raw.toString('utf8')).get('payload') ?? '', 'utf8') : raw;
      // The metric's label is one of a few values: header text (unsigned, anyone's) must not make new series.
      const classified = classify(headers);
      const eventLabel = METRIC_EVENTS.has(classified) ? classified : 'other';
      if (config.webhook.secret && !verifySignature(config.webhook.secret, signed, headers.signature)) {
        metrics.webhooks.inc({ event: eventLabel, result: 'bad_signature' });
        throw new ApiError(401, 'bad_signature', headers.signature ? 'the delivery signature does not match' : 'the delivery is not signed (X-Forgejo-Signature)');
      }
      let payload: unknown;
      try {
        payload = parseJson(signed.toString('utf8'));
      } catch {
        metrics.webhooks.inc({ event: eventLabel, result: 'bad_payload' });
        throw new ApiError(400, 'bad_json', 'the delivery body is not valid JSON');
      }
      let decision;
      try {
        decision = await mapDelivery(headers, payload, { config, forgejo: ctx.forgejo });
      } catch (error) {
        if (error instanceof LookupError) throw new ApiError(502, 'forgejo_unavailable', error.message);
        throw error;
      }
      const delivery = headers.delivery?.slice(0, 200) ?? null;
      const event = decision.event.slice(0, 100);
      request.log.info({ delivery, event, decision: decision.kind }, 'webhook delivery');
      switch (decision.kind) {
        case 'ignore':
          metrics.webhooks.inc({ event: eventLabel, result: 'ignored' });
          return reply.code(200).send({ status: 'ignored', reason: decision.reason, event, delivery });
        case 'bad_payload':
          metrics.webhooks.inc({ event: eventLabel, result: 'bad_payload' });
          throw new ApiError(400, 'bad_payload', decision.reason);
        case 'unknown_type': {
          const message = `${decision.role} ${decision.login} is not an agent type (known: ${config.types.join(', ')}; map logins in the config's logins)`;
          if (config.webhook.unknownLogins === 'ignore') {
            metrics.webhooks.inc({ event: eventLabel, result: 'ignored' });
            return reply.code(200).send({ status: 'ignored', reason: message, event, delivery });
          }
          metrics.webhooks.inc({ event: eventLabel, result: 'unknown_type' });
          throw new ApiError(422, 'unknown_agent_type', message, { login: decision.login, role: decision.role });
        }
        case 'task': {
          const checkout = taskCheckout(remoteUrlTemplate(config), decision.input.repo, decision.refs);
          // The same delivery again (a redelivery, a replay) never starts a second run.
          const key = deliveryKey(signed);
          const receipt = await deliveries.claim(key, decision.taskId);
          if (!receipt.first) {
            metrics.webhooks.inc({ event: eventLabel, result: 'duplicate' });
            const taskId = receipt.taskId ?? decision.taskId;
            return reply.code(200).send({ status: 'duplicate', reason: `this delivery started task ${taskId} before (a redelivery or a replay)`, task_id: taskId, event, delivery });
          }
          const hold = await ctx.budgetHold(decision.input.repo);
          let started;
          try {
            const priority = kindPriority(config, decision.input.kind);
            started = await tasks.start({ ...decision.input, ...(checkout ? { checkout } : {}), ...(hold ? { hold } : {}), priority, options: ctx.taskOptions }, { taskId: decision.taskId });
          } catch (error) {
            await deliveries.giveBack(key).catch((e: unknown) => request.log.warn({ err: e, delivery }, 'could not give the delivery receipt back'));
            throw error;
          }
          await deliveries.confirm(key).catch((e: unknown) => request.log.warn({ err: e, delivery }, 'could not confirm the delivery receipt'));
          metrics.webhooks.inc({ event: eventLabel, result: started.created ? 'created' : 'existing' });
          return reply.code(202).send({
            status: started.created ? 'created' : 'existing',
            task_id: started.taskId,
            created: started.created,
            kind: decision.input.kind,
            agent_type: decision.input.agentType,
            event,
            delivery,
          });
        }
      }
    },
  );
};
