import type { ErrorRequestHandler } from 'express';
import { unavailableCode } from '../db/unavailable';
import type { Logger } from '../lib/logger';
import { ApiError } from '../wire/errors';
import { admitOutageWarning } from './request-log';

/**
 * Maps every error to a JSON answer (an ApiError, src/wire/errors.ts, as it says); anything unexpected is a 500 with no
 * internals in the body.
 */
export function errorMiddleware(logger: Logger): ErrorRequestHandler {
  return (err: unknown, req, res, _next) => {
    const e = err as { type?: string; status?: number; message?: string; code?: string };
    let apiError: ApiError;
    let down: string | undefined;
    if (err instanceof ApiError) apiError = err;
    else if (e?.type === 'entity.parse.failed') apiError = new ApiError(400, 'invalid_json', 'the request body is not valid JSON');
    else if (e?.type === 'entity.too.large') apiError = new ApiError(413, 'payload_too_large', 'the request body is too large');
    else if (e?.type === 'encoding.unsupported' || e?.type === 'charset.unsupported')
      apiError = new ApiError(415, 'unsupported_media_type', e.message ?? 'unsupported encoding');
    // Postgres canceled a statement at DATABASE_STATEMENT_TIMEOUT_MS: nothing was written by it.
    else if (e?.code === '57014') apiError = new ApiError(503, 'database_timeout', 'the database took too long to answer; retry shortly', undefined, { 'Retry-After': '1' });
    else if (typeof e?.status === 'number' && e.status >= 400 && e.status < 500)
      apiError = new ApiError(e.status, 'bad_request', e.message ?? 'bad request');
    else if ((down = unavailableCode(err)) !== undefined) {
      // The first of each code in a window is written with its error; an outage's repeats are counted.
      if (admitOutageWarning(logger, down)) logger.warn({ err, requestId: req.requestId, method: req.method, path: req.path }, 'Postgres unavailable');
      apiError = new ApiError(503, 'database_unavailable', 'the database cannot be reached; nothing was done, retry shortly', undefined, { 'Retry-After': '2' });
    } else {
      logger.error({ err, requestId: req.requestId, method: req.method, path: req.path }, 'unhandled error');
      apiError = new ApiError(500, 'internal_error', 'something went wrong on our side');
    }
    if (res.headersSent) return;
    res.status(apiError.status).set(apiError.headers);
    res.json(errorBody(apiError));
  };
}

/** The JSON body of an error answer: `{ error: { code, message, details? } }`. */
export function errorBody(apiError: ApiError): { error: { code: string; message: string; details?: unknown } } {
  const body: { code: string; message: string; details?: unknown } = { code: apiError.code, message: apiError.message };
  if (apiError.details !== undefined) body.details = apiError.details;
  return { error: body };
}
