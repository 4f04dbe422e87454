import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { isIPv6 } from 'node:net';
import { and, eq, gt, isNull, or, sql, type SQL } from 'drizzle-orm';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { grantCredits } from '../credits/ledger';
import type { Db } from '../db/client';
import { apiKeys, users, type UserRow } from '../db/schema';
import { apiKeyLookups, clientRefusals } from '../lib/metrics';
import { setRecent } from '../lib/recent-map';
import { canonicalAddress } from '../lib/ip-addresses';
import { ApiError } from '../wire/errors';
import { TokenBuckets } from './token-buckets';

const KEY_PREFIX = 'vg_';

type Tx = Parameters<Parameters<Db['transaction']>[0]>[0] | Db;
export type ApiKeyRow = typeof apiKeys.$inferSelect;

/**
 * A key works while `revoked_at` is null or still ahead: a rotation with a grace period revokes the old key at a future
 * time. Everything that asks whether a key is revoked asks this.
 */
export const liveApiKey: SQL = or(isNull(apiKeys.revokedAt), gt(apiKeys.revokedAt, sql`now()`))!;

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export function newApiKey(): string {
  return KEY_PREFIX + randomBytes(24).toString('base64url');
}

export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(12).toString('hex')}`;
}

/** A new key of the user: the key is returned here and never again (only its hash is stored). */
export async function insertApiKey(tx: Tx, userId: string): Promise<{ apiKey: string; key: ApiKeyRow }> {
  const apiKey = newApiKey();
  const [key] = await tx.insert(apiKeys).values({ id: newId('key'), userId, keyHash: hashApiKey(apiKey), keyPrefix: apiKey.slice(0, 8) }).returning();
  return { apiKey, key };
}

/** Creates a user with one API key; the key is returned here and never again. */
export async function createUser(db: Db, { name, tier, credits }: { name: string; tier: string; credits: number }) {
  return db.transaction(async (tx) => {
    const [user] = await tx.insert(users).values({ id: newId('usr'), name, tier }).returning();
    const { apiKey } = await insertApiKey(tx, user.id);
    await grantCredits(tx, user.id, credits, `${user.id}:signup`);
    return { user, apiKey };
  });
}

/** The user of a live key, the key's id, and when it stops working if a rotation's grace period is running. */
export async function findApiKey(db: Db, apiKey: string): Promise<{ user: UserRow; keyId: string; revokedAt: Date | null } | undefined> {
  const [row] = await db
    .select({ user: users, keyId: apiKeys.id, revokedAt: apiKeys.revokedAt })
    .from(apiKeys)
    .innerJoin(users, eq(users.id, apiKeys.userId))
    .where(and(eq(apiKeys.keyHash, hashApiKey(apiKey)), liveApiKey));
  apiKeyLookups.inc({ result: row ? 'found' : 'unknown' });
  return row;
}

export async function findUserByApiKey(db: Db, apiKey: string): Promise<UserRow | undefined> {
  return (await findApiKey(db, apiKey))?.user;
}

export function bearerToken(req: Request): string | undefined {
  return tokenOf(req.headers.authorization);
}

/** The key of an `Authorization: Bearer <key>` header. */
function tokenOf(header: string | undefined): string | undefined {
  const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return match?.[1];
}

const unauthorized = () =>
  new ApiError(401, 'unauthorized', 'a valid API key is required: Authorization: Bearer <api key>', undefined, {
    'WWW-Authenticate': 'Bearer',
  });

declare module 'express-serve-static-core' {
  interface Request {
    user?: UserRow;
    /** The id of the API key the request authenticated with (an event stream ends when it is revoked). */
    apiKeyId?: string;
  }
}

/**
 * Who holds an API key, remembered for AUTH_CACHE_MS per process: every request authenticates, and a database round trip
 * per request is the largest cost of a status read. Only keys that named a user are remembered (an attacker's guesses
 * are not), never past the moment a rotation retires them, and the cache is bounded (the key used longest ago goes
 * first). A key revoked through this process is forgotten at once (forgetApiKeys); one revoked through another process
 * stops working here within AUTH_CACHE_MS. A key past AUTH_CACHE_MS is looked up again but stays known: that is what
 * lets it through while its client's address is refused unknown keys (below).
 */
export const AUTH_CACHE_MS = 5_000;
const AUTH_CACHE_MAX = 10_000;

interface KnownKey {
  user: UserRow;
  keyId: string;
  until: number;
}

/** The keys this process knows, keys revoked through it lately, and, once configured, each client address's failures. */
interface Authentication {
  keys: Map<string, KnownKey>;
  /** Look-ups under way (key → its answer): requests with the same key while one runs wait for it rather than query too. */
  lookups: Map<string, ReturnType<typeof findApiKey>>;
  /** Keys revoked through this process lately (id → when): a lookup that read the row before the revocation must not cache it. */
  forgotten: Map<string, number>;
  failures?: TokenBuckets;
}

const authentications = new WeakMap<Db, Authentication>();

function authenticationOf(db: Db): Authentication {
  let auth = authentications.get(db);
  if (!auth) authentications.set(db, (auth = { keys: new Map(), lookups: new Map(), forgotten: new Map() }));
  return auth;
}

/**
 * Bounds what failed authentications cost: every failure from a client address takes a token of its bucket (`burst`,
 * refilled `perSecond`), and while the bucket is empty the address's keys that this process does not know are refused
 * 429 without a database query. Keys it knows (valid when last looked up) pass as before, so one client guessing keys
 * from an address does not lock out the users behind it.
 */
export function limitFailedAuthentication(db: Db, { burst, perSecond }: { burst: number; perSecond: number }): void {
  authenticationOf(db).failures = new TokenBuckets({ burst, perSecond, maxKeys: 100_000 });
}

/** Drops these keys from this process's cache, so a revocation holds here from the next request. */
export function forgetApiKeys(db: Db, keyIds: Iterable<string>): void {
  const { keys, lookups, forgotten } = authenticationOf(db);
  // A look-up under way may have read the key before its revocation: requests from now on ask again.
  lookups.clear();
  const now = Date.now();
  for (const [id, at] of forgotten) if (at < now - AUTH_CACHE_MS) forgotten.delete(id);
  const ids = new Set(keyIds);
  for (const id of ids) forgotten.set(id, now);
  for (const [apiKey, holder] of keys) if (ids.has(holder.keyId)) keys.delete(apiKey);
}

/** Whose failures a request counts as: an IPv4 address, or an IPv6 address's /64 (a single host is given a whole /64). */
export function clientOf(req: Request): string {
  return clientOfAddress(req.ip ?? '');
}

function clientOfAddress(ip: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(ip);
  if (mapped) return mapped[1];
  return isIPv6(ip) ? `${canonicalAddress(ip).split(':').slice(0, 4).join(':')}::/64` : ip;
}

/**
 * One look-up per key at a time: a client's burst on a key whose cache entry has just expired (a stream flood, a submit
 * flood over many connections, every request after an idle spell) costs one query, not one per request.
 */
function lookUpOnce<T>(lookups: Map<string, Promise<T>>, token: string, lookUp: () => Promise<T>): Promise<T> {
  let answer = lookups.get(token);
  if (!answer) {
    const mine: Promise<T> = lookUp().finally(() => {
      if (lookups.get(token) === mine) lookups.delete(token);
    });
    lookups.set(token, (answer = mine));
  }
  return answer;
}

function tooManyFailures(failures: TokenBuckets, client: string, now: number): ApiError {
  clientRefusals.inc({ code: 'too_many_failed_auth' });
  return new ApiError(429, 'too_many_failed_auth', 'too many failed authentications from this address; retry later', undefined, {
    'Retry-After': String(Math.max(1, Math.ceil(failures.waitSeconds(client, now)))),
  });
}

/**
 * The refusal of a client whose failure bucket is empty (429 too_many_failed_auth), which takes a token so that the bucket
 * stays empty while the client keeps sending; undefined while it has tokens left.
 */
export function failuresRefusal(failures: TokenBuckets, client: string, now = Date.now()): ApiError | undefined {
  if (failures.level(client, now) >= 1) return undefined;
  failures.take(client, now);
  return tooManyFailures(failures, client, now);
}

/**
 * The answer requireUser would give a request with a key this process does not know, from an address whose failure
 * bucket is empty (429 too_many_failed_auth), decided from the raw header and the socket's address so that a key-guesser's
 * refusals cost no routing (src/api/early-refusals.ts). Undefined when the request must go the usual way: no key, a
 * known one, or an address with tokens left. Only a request that would be refused takes a token, as there.
 */
export function guessRefusal(db: Db, authorization: string | undefined, address: string, now = Date.now()): ApiError | undefined {
  const { keys, failures } = authenticationOf(db);
  const token = failures && tokenOf(authorization);
  if (!token || token.length > 200 || keys.has(token)) return undefined;
  return failuresRefusal(failures, clientOfAddress(address), now);
}

/**
 * The user whose key this process holds and may still use without a look-up (AUTH_CACHE_MS, not revoked), read from the
 * raw header; undefined for any other key. What requireUser would let through without a query.
 */
export function heldKeyUser(db: Db, authorization: string | undefined, now = Date.now()): UserRow | undefined {
  const token = tokenOf(authorization);
  if (!token || token.length > 200) return undefined;
  const known = authenticationOf(db).keys.get(token);
  return known && known.until > now ? known.user : undefined;
}

export function requireUser(db: Db): RequestHandler {
  return async (req: Request, _res: Response, next: NextFunction) => {
    // An outer mount authenticated this request already (a stream of one job passes /v1/generations on its way).
    if (req.user) return next();
    const { keys, lookups, forgotten, failures } = authenticationOf(db);
    const token = bearerToken(req);
    const now = Date.now();
    if (!token || token.length > 200) {
      failures?.take(clientOf(req), now);
      throw unauthorized();
    }
    let known = keys.get(token);
    if (!known || known.until <= now) {
      // An unknown key may fail: it takes its token before the query (so concurrent guesses cannot all pass on the
      // last one) and gives it back if it names a user. A known key's look-up takes none.
      const client = known || !failures ? undefined : clientOf(req);
      if (client !== undefined && !failures!.take(client, now)) {
        throw tooManyFailures(failures!, client, now);
      }
      const found = await lookUpOnce(lookups, token, () => findApiKey(db, token));
      if (!found) {
        keys.delete(token);
        // A known key that stopped working (revoked) counts as a failure too.
        if (client === undefined) failures?.take(clientOf(req), now);
        throw unauthorized();
      }
      if (client !== undefined) failures!.giveBack(client);
      known = { user: found.user, keyId: found.keyId, until: Math.min(now + AUTH_CACHE_MS, found.revokedAt?.getTime() ?? Infinity) };
      if (!forgotten.has(found.keyId)) setRecent(keys, token, known, AUTH_CACHE_MAX);
    }
    req.user = known.user;
    req.apiKeyId = known.keyId;
    next();
  };
}

/** Whether `token` is the admin key, compared in constant time (by hash, so lengths never differ). */
export function isAdminKey(adminApiKey: string, token: string | undefined): boolean {
  return token !== undefined && timingSafeEqual(Buffer.from(hashApiKey(token), 'hex'), Buffer.from(hashApiKey(adminApiKey), 'hex'));
}

export function requireAdmin(adminApiKey: string): RequestHandler {
  return (req, _res, next) => {
    if (!isAdminKey(adminApiKey, bearerToken(req))) throw unauthorized();
    next();
  };
}

/** The authenticated user of a route behind requireUser. */
export function currentUser(req: Request): UserRow {
  if (!req.user) throw unauthorized();
  return req.user;
}
