// Every error the API answers is JSON `{code, message}` with a stable code. This module maps
// Drover's, Fastify's and Temporal's errors to HTTP.
import { isGrpcServiceError, ServiceError } from '@temporalio/client';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { TaskError, type TaskErrorCode } from '../task-errors';

export class ApiError extends Error {
  override readonly name = 'ApiError';
  constructor(
    readonly statusCode: number,
    readonly code: string,
    message: string,
    readonly extra: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** How TaskError codes answer by default; assign turns the state ones into 400 (see tasks-coordinator.ts). */
export const TASK_ERROR_STATUS: Record<TaskErrorCode, number> = {
  task_not_found: 404,
  task_closed: 409,
  task_not_pending: 409,
  task_not_running: 409,
  wrong_agent_type: 409,
  reserved_for_other: 409,
  stale_dispatch: 409,
  not_lease_holder: 409,
  stale_attempt: 409,
  task_held: 409,
};

export function fromTaskError(error: TaskError, overrides: Partial<Record<TaskErrorCode, number>> = {}): ApiError {
  return new ApiError(overrides[error.code] ?? TASK_ERROR_STATUS[error.code], error.code, error.message);
}

const GRPC_UNAVAILABLE = 14;
const GRPC_DEADLINE_EXCEEDED = 4;

/** Temporal could not be reached (or did not answer in time): worth a retry, not a bug. */
export function isTemporalUnavailable(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if (isGrpcServiceError(e) && (e.code === GRPC_UNAVAILABLE || e.code === GRPC_DEADLINE_EXCEEDED)) return true;
    if (e instanceof ServiceError && /unavailable|deadline|connect/i.test(e.message)) return true;
  }
  return false;
}

const FASTIFY_CODES: Record<string, [number, string]> = {
  FST_ERR_CTP_BODY_TOO_LARGE: [413, 'body_too_large'],
  FST_ERR_CTP_INVALID_MEDIA_TYPE: [415, 'unsupported_media_type'],
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: [400, 'bad_request'],
  FST_ERR_CTP_EMPTY_JSON_BODY: [400, 'bad_json'],
  FST_ERR_CTP_INVALID_JSON_BODY: [400, 'bad_json'],
  FST_ERR_BAD_URL: [400, 'bad_url'],
  FST_ERR_ASYNC_CONSTRAINT: [400, 'bad_request'],
};

export function toApiError(error: unknown): ApiError {
  if (error instanceof ApiError) return error;
  if (error instanceof TaskError) return fromTaskError(error);
  const fastifyError = error as FastifyError & { validation?: unknown; validationContext?: string };
  if (fastifyError?.validation) {
    return new ApiError(400, 'bad_request', fastifyError.message || 'invalid request');
  }
  const known = fastifyError?.code ? FASTIFY_CODES[fastifyError.code] : undefined;
  if (known) return new ApiError(known[0], known[1], fastifyError.message);
  if (isTemporalUnavailable(error)) return new ApiError(503, 'temporal_unavailable', 'Temporal is not reachable; retry later');
  const status = typeof fastifyError?.statusCode === 'number' ? fastifyError.statusCode : 500;
  if (status >= 400 && status < 500) return new ApiError(status, 'bad_request', fastifyError.message || 'bad request');
  return new ApiError(500, 'internal', 'internal error');
}

export function sendError(reply: FastifyReply, error: ApiError): FastifyReply {
  return reply.code(error.statusCode).type('application/json').send({ ...error.extra, code: error.code, message: error.message });
}

export function installErrorHandlers(app: FastifyInstance): void {
  app.setErrorHandler((error: unknown, request: FastifyRequest, reply: FastifyReply) => {
    const apiError = toApiError(error);
    if (apiError.statusCode >= 500) request.log.error({ err: error }, 'request failed');
    else request.log.debug({ code: apiError.code, message: apiError.message }, 'request refused');
    return sendError(reply, apiError);
  });
  app.setNotFoundHandler((request, reply) => {
    return sendError(reply, new ApiError(404, 'route_not_found', `no route ${request.method} ${request.url.split('?')[0]}`));
  });
}

/** Fastify's own framework errors (bad URLs…), which happen before routing. */
export function frameworkErrors(error: FastifyError, _request: FastifyRequest, reply: FastifyReply): void {
  const apiError = toApiError(error);
  void sendError(reply, apiError);
}
