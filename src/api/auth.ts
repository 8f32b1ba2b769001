// Bearer tokens: the admin token for coordinator and operator endpoints, each agent's own token
// for the pull protocol. Compared as SHA-256 digests in constant time.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { ApiError } from './errors';

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Constant-time comparison of a presented token with a stored SHA-256 (hex) digest. */
export function tokenMatches(presented: string | undefined, expectedHash: string | undefined): boolean {
  if (!presented || !expectedHash || !/^[0-9a-f]{64}$/.test(expectedHash)) return false;
  return timingSafeEqual(Buffer.from(hashToken(presented), 'hex'), Buffer.from(expectedHash, 'hex'));
}

/** The bearer token of a request, if it carries one. */
export function bearerToken(request: FastifyRequest): string | undefined {
  const value = request.headers.authorization;
  if (typeof value !== 'string') return undefined;
  const match = /^Bearer\s+(\S{1,1024})\s*$/i.exec(value);
  return match?.[1];
}

/** A preHandler that admits only requests bearing the admin token. */
export function adminGuard(adminTokenHash: string | undefined) {
  return async (request: FastifyRequest): Promise<void> => {
    if (!adminTokenHash) throw new ApiError(403, 'admin_disabled', 'admin endpoints are disabled: set api.adminToken in the config');
    const token = bearerToken(request);
    if (!token) throw new ApiError(401, 'unauthorized', 'this endpoint needs the admin token (Authorization: Bearer …)');
    if (!tokenMatches(token, adminTokenHash)) throw new ApiError(401, 'bad_token', 'the admin token is not valid');
  };
}
