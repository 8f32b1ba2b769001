// Failed authentication is rate limited per client address: once an address has failed
// `api.maxAuthFailures` times (a bad token, no token, a bad webhook signature) within
// `api.authFailureWindow`, everything it sends to the API answers 429 `too_many_auth_failures`
// until the window has passed — right tokens included, so that guessing cannot go on. Counting is
// @fastify/rate-limit's (its in-memory store, per API process); successes are never counted.
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance } from 'fastify';
import { durationMs } from '../config';
import type { ApiContext } from './context';
import { ApiError } from './errors';

/** Answers that are failed authentication. */
const AUTH_FAILURE_CODES = new Set(['unauthorized', 'bad_token', 'bad_signature']);

export async function installAuthFailureLimit(app: FastifyInstance, ctx: Pick<ApiContext, 'config'>): Promise<void> {
  const max = ctx.config.api.maxAuthFailures;
  const windowMs = durationMs(ctx.config.api.authFailureWindow);
  // Registered without a global limit: only what is counted below counts.
  await app.register(rateLimit, { global: false });
  const countFailure = app.createRateLimit({ max, timeWindow: windowMs, keyGenerator: (request) => request.ip });
  const blockedUntil = new Map<string, number>();

  app.addHook('onRequest', async (request, reply) => {
    if (!request.url.startsWith('/api/')) return; // health, metrics, docs and task pages stay open
    const until = blockedUntil.get(request.ip);
    if (until === undefined) return;
    if (Date.now() >= until) {
      blockedUntil.delete(request.ip);
      return;
    }
    const seconds = Math.ceil((until - Date.now()) / 1000);
    reply.header('retry-after', String(seconds));
    throw new ApiError(429, 'too_many_auth_failures', `too many failed authentications from this address: try again in ${seconds} s`, { retry_after_s: seconds });
  });

  app.addHook('onSend', async (request, reply, payload) => {
    if (reply.statusCode !== 401 || blockedUntil.has(request.ip)) return payload;
    const code = typeof payload === 'string' ? /"code":"([a-z_]+)"/.exec(payload)?.[1] : undefined;
    if (!code || !AUTH_FAILURE_CODES.has(code)) return payload;
    const verdict = await countFailure(request);
    if (!verdict.isAllowed && verdict.isExceeded) {
      blockedUntil.set(request.ip, Date.now() + verdict.ttl);
      request.log.warn({ ip: request.ip, failures: verdict.max, windowMs }, 'too many failed authentications: the address is refused for a while');
    }
    return payload;
  });
}
