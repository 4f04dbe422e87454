import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../config';
import type { Db } from '../db/client';
import type { Logger } from '../lib/logger';
import { guessRefusal } from './auth';
import { errorBody } from './errors';
import { recordRequest, requestIdOf } from './request-log';

/** The route label of requests answered before routing (vg_http_request_duration_seconds). */
export const EARLY_ROUTE = 'before routing';

/**
 * Paths whose every route requires a user's key. A request to one of them with a key this process does not know, from
 * an address refused unknown keys, gets exactly what requireUser would answer; elsewhere (public pages, the links in
 * mails, the backend's callbacks, admin routes) a key is not what decides. A route left out of this list only loses the
 * shortcut.
 */
const KEYED_PATHS = /^\/v1\/(?:generations|batches|usage|notifications|events|webhook-endpoints|webhook-secret|api-keys)(?:[/?]|$)/;

/**
 * Answers a key-guesser's requests before Express sees them: once an address's failed authentications have emptied its
 * bucket (src/api/auth.ts), each further guess from it is refused from the raw request (429 too_many_failed_auth, the
 * body, headers, request id, histogram and log line the routed refusal has) without routing, body parsing or the error
 * middleware. A refused request then costs the API about half of what it did. Only when the socket's address is the
 * client's: behind a proxy (TRUST_PROXY) the address is Express's to work out, and every request goes the usual way.
 */
export function earlyRefusals({ db, config, logger }: { db: Db; config: Config; logger: Logger }) {
  if (config.api.trustProxy !== undefined) return undefined;
  return (req: IncomingMessage, res: ServerResponse): boolean => {
    const { authorization } = req.headers;
    if (authorization === undefined || !KEYED_PATHS.test(req.url ?? '')) return false;
    const started = process.hrtime.bigint();
    const refusal = guessRefusal(db, authorization, req.socket.remoteAddress ?? '');
    if (!refusal) return false;
    const requestId = requestIdOf(req.headers['x-request-id']);
    const body = JSON.stringify(errorBody(refusal));
    res.writeHead(refusal.status, {
      ...refusal.headers,
      'X-Request-Id': requestId,
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
    recordRequest(logger, { requestId, method: req.method, route: EARLY_ROUTE, status: refusal.status, started });
    return true;
  };
}
