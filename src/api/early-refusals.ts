import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Config } from '../config';
import type { Db } from '../db/client';
import type { Logger } from '../lib/logger';
import { guessRefusal, heldKeyUser } from './auth';
import type { Admission } from './admission';
import { refusals } from '../lib/metrics';
import type { ApiError } from '../wire/errors';
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

/** A submit (POST /v1/generations, any query), the route its refusal is labelled with as the routed one is. */
const SUBMIT_PATH = /^\/v1\/generations\/?(?:\?|$)/;
const SUBMIT_ROUTE = '/v1/generations/';

/**
 * Answers what needs no routing before Express sees it, with the body, headers, request id, histogram and log line the
 * routed answer has, but without routing, body parsing or the error middleware (a refused request then costs the API
 * about half of what it did):
 * - **A flood's submits.** A submit without an Idempotency-Key, with a key this process holds, from a user whose token
 *   bucket it knows to be empty (src/api/admission.ts), gets the 429 rate_limited the route would give, its body unread.
 *   (A keyed submit may be a replay, which is never refused: it goes the usual way.)
 * - **A key-guesser's requests.** Once an address's failed authentications have emptied its bucket (src/api/auth.ts),
 *   each further request from it with a key this process does not know, to a path whose every route needs a key, is
 *   refused 429 too_many_failed_auth. Only when the socket's address is the client's: behind a proxy (TRUST_PROXY) the
 *   address is Express's to work out, and such requests go the usual way.
 */
export function earlyRefusals({ db, config, logger, admission }: { db: Db; config: Config; logger: Logger; admission?: Pick<Admission, 'knownEmptyRefusal'> }) {
  const guesses = config.api.trustProxy === undefined;
  const answer = (req: IncomingMessage, res: ServerResponse, refusal: ApiError, started: bigint, route: string, userId?: string) => {
    const requestId = requestIdOf(req.headers['x-request-id']);
    const body = JSON.stringify(errorBody(refusal));
    res.writeHead(refusal.status, {
      ...refusal.headers,
      'X-Request-Id': requestId,
      'Content-Type': 'application/json; charset=utf-8',
      'Content-Length': Buffer.byteLength(body),
    });
    res.end(req.method === 'HEAD' ? undefined : body);
    recordRequest(logger, { requestId, method: req.method, route, status: refusal.status, started, userId });
    return true;
  };
  return (req: IncomingMessage, res: ServerResponse): boolean => {
    const { authorization } = req.headers;
    if (authorization === undefined) return false;
    const started = process.hrtime.bigint();
    const url = req.url ?? '';
    if (admission && req.method === 'POST' && req.headers['idempotency-key'] === undefined && SUBMIT_PATH.test(url)) {
      const user = heldKeyUser(db, authorization);
      const refusal = user && admission.knownEmptyRefusal(user);
      if (refusal) {
        refusals.inc({ tier: user.tier, reason: refusal.code });
        return answer(req, res, refusal, started, SUBMIT_ROUTE, user.id);
      }
      if (user) return false;
    }
    if (!guesses || !KEYED_PATHS.test(url)) return false;
    const refusal = guessRefusal(db, authorization, req.socket.remoteAddress ?? '');
    return refusal ? answer(req, res, refusal, started, EARLY_ROUTE) : false;
  };
}
