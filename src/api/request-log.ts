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

/**
 * A request id on every request (the caller's X-Request-Id when it is sane, else a new one; echoed back), one JSON log
 * line per request, and the duration histogram by route pattern. Headers and bodies are never logged: they carry keys.
 */
export function requestLog(logger: Logger): RequestHandler {
  return (req, res, next) => {
    const incoming = req.get('x-request-id');
    const requestId = incoming && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    req.requestId = requestId;
    res.set('X-Request-Id', requestId);
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const route = req.route ? `${req.baseUrl}${String(req.route.path)}` : 'unmatched';
      httpDuration.observe({ method: req.method, route, status: `${Math.floor(res.statusCode / 100)}xx` }, seconds);
      // The line's object is built only when it will be written (LOG_LEVEL above info writes none).
      if (logger.isLevelEnabled('info')) {
        logger.info(
          { requestId, method: req.method, route, status: res.statusCode, durationMs: Math.round(seconds * 1000), userId: req.user?.id },
          'request',
        );
      }
    });
    next();
  };
}
