import type { ErrorRequestHandler, Response } from 'express';
import type { z } from 'zod';
import type { Logger } from '../src/lib/logger';

/** The simulator's error body: `{error: {code, message}}`, the shape the HTTP backend adapter reads. */
export function sendError(res: Response, status: number, code: string, message: string): void {
  res.status(status).json({ error: { code, message } });
}

/** Names the offending field(s), e.g. "prompt: Too small: expected string to have >=1 characters". */
export function describeIssues(error: z.ZodError): string {
  return error.issues.map((issue) => `${issue.path.length ? issue.path.join('.') : 'body'}: ${issue.message}`).join('; ');
}

/** Malformed JSON is the client's fault; anything else is ours. */
export function errorHandler(logger: Logger): ErrorRequestHandler {
  return (err, _req, res, _next) => {
    const status = typeof err?.status === 'number' ? err.status : 500;
    if (err?.type === 'entity.parse.failed') return sendError(res, 400, 'invalid_request', 'body: not valid JSON');
    if (status >= 400 && status < 500) return sendError(res, status, 'invalid_request', String(err?.message ?? 'bad request'));
    logger.error({ err }, 'simulator request failed');
    sendError(res, 500, 'internal_error', 'unexpected simulator error');
  };
}
