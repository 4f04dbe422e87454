import { randomUUID } from 'node:crypto';
import type { RequestHandler } from 'express';
import type { Logger } from '../lib/logger';
import { httpDuration } from '../lib/metrics';
import { RefusalLog } from './refusal-log';

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

/**
 * Each logger's counts of repeats (src/api/refusal-log.ts): of the request lines of refusals, and of the warning a
 * Postgres outage writes for each request it fails.
 */
const refusalLogs = new WeakMap<Logger, { answers: RefusalLog; outages: RefusalLog }>();

function refusalLogOf(logger: Logger): { answers: RefusalLog; outages: RefusalLog } {
  let refusals = refusalLogs.get(logger);
  if (!refusals) {
    refusals = {
      answers: new RefusalLog((fields) => logger.info(fields, 'refusals like this one, counted rather than written one by one')),
      // Kept by the error's code, which is what these lines name.
      outages: new RefusalLog(({ route: code, repeats, windowMs }) => logger.warn({ code, repeats, windowMs }, 'Postgres unavailable for more requests, counted rather than written one by one')),
    };
    refusalLogs.set(logger, refusals);
  }
  return refusals;
}

/** Writes the refusals counted so far (the API calls it as it stops). */
export function flushRefusals(logger: Logger): void {
  const refusals = refusalLogs.get(logger);
  refusals?.answers.flush();
  refusals?.outages.flush();
}

/**
 * Whether a request's "Postgres unavailable" warning is to be written: the first with its error's code in the window.
 * An outage fails every request that reads the database, each with the same error; the repeats are counted.
 */
export function admitOutageWarning(logger: Logger, errorCode: string): boolean {
  return refusalLogOf(logger).outages.admit({ method: undefined, route: errorCode, status: 503 });
}

/**
 * The duration histogram by route pattern, and the request's log line (built only when it will be written). An answer
 * that asks the client to come back later (429 slow down, 503 unavailable) is written only as the first of its kind in a
 * window; its repeats are counted into one line (src/api/refusal-log.ts). A flood, or an outage under load, would
 * otherwise write the log at the clients' rate.
 */
export function recordRequest(
  logger: Logger,
  line: { requestId: string; method: string | undefined; route: string; status: number; started: bigint; userId?: string },
): void {
  const seconds = Number(process.hrtime.bigint() - line.started) / 1e9;
  httpDuration.observe({ method: line.method, route: line.route, status: `${Math.floor(line.status / 100)}xx` }, seconds);
  if (logger.isLevelEnabled('info')) {
    const { requestId, method, route, status, userId } = line;
    if ((status === 429 || status === 503) && !refusalLogOf(logger).answers.admit({ method, route, status, userId })) return;
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
    const matched = routeOf(req);
    res.on('finish', () => {
      recordRequest(logger, { requestId, method: req.method, route: matched.pattern(), status: res.statusCode, started, userId: req.user?.id });
    });
    next();
  };
}

/**
 * The route pattern the request matched, with the path its router is mounted at. Read when the router sets `req.route`:
 * an answer the error middleware gives (a refusal passed on with `next(err)`) is written after the router has put the
 * base URL back, which labelled a refused submit `/` instead of `/v1/generations/`. A request that no route took but
 * that entered a mount (refused by the mount's authentication, say, or failed there by a database outage) is labelled
 * with the deepest mount it entered, `/v1/generations (unrouted)`, not `unmatched`: the mounts are a fixed set, so the
 * label stays bounded. One that entered none is `unmatched`.
 */
function routeOf(req: Parameters<RequestHandler>[0]): { pattern(): string } {
  let route: { path?: unknown } | undefined;
  let mountedAt = '';
  let baseUrl = req.baseUrl;
  let deepestMount = '';
  Object.defineProperty(req, 'route', {
    configurable: true,
    enumerable: true,
    get: () => route,
    set: (value: { path?: unknown } | undefined) => {
      route = value;
      mountedAt = baseUrl;
    },
  });
  Object.defineProperty(req, 'baseUrl', {
    configurable: true,
    enumerable: true,
    get: () => baseUrl,
    set: (value: string) => {
      baseUrl = value;
      if (value.length > deepestMount.length) deepestMount = value;
    },
  });
  return { pattern: () => (route ? `${mountedAt}${String(route.path)}` : deepestMount ? `${deepestMount} (unrouted)` : 'unmatched') };
}
