import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { Logger } from '../lib/logger';
import { httpDuration } from '../lib/metrics';

const REQUEST_ID = /^[\w.:-]{1,128}$/;

declare module 'express-serve-static-core' {
  interface Request {
    requestId?: string;
  }
}

/** The caller's X-Request-Id when it is sane, else a new one. */
export function requestIdOf(incoming: string | string[] | undefined): string {
  return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
}

/** The duration histogram by route pattern, and the request's log line (built only when it will be written). */
export function recordRequest(
  logger: Logger,
  line: { requestId: string; method: string | undefined; route: string; status: number; started: bigint; userId?: string },
): void {
  const seconds = Number(process.hrtime.bigint() - line.started) / 1e9;
  httpDuration.observe({ method: line.method, route: line.route, status: `${Math.floor(line.status / 100)}xx` }, seconds);
  if (logger.isLevelEnabled('info')) {
    const { requestId, method, route, status, userId } = line;
    logger.info({ requestId, method, route, status, durationMs: Math.round(seconds * 1000), userId }, 'request');
  }
}

/**
 * A request id on every request (the caller's X-Request-Id when it is sane, else a new one; echoed back), one JSON log
 * line per request, and the duration histogram by route pattern. Headers and bodies are never logged: they carry keys.
 */
export function requestLog(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const requestId = requestIdOf(req.headers['x-request-id']);
    req.requestId = requestId;
    res.set('X-Request-Id', requestId);
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const route = req.route ? `${req.baseUrl}${String(req.route.path)}` : 'unmatched';
      recordRequest(logger, { requestId, method: req.method, route, status: res.statusCode, started, userId: req.user?.id });
    });
    next();
  };
}
