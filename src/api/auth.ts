import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { and, eq, gt, isNull, or, sql, type SQL } from 'drizzle-orm';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { grantCredits } from '../credits/ledger';
import type { Db } from '../db/client';
import { apiKeys, users, type UserRow } from '../db/schema';
import { ApiError } from './errors';

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
  return row;
}

export async function findUserByApiKey(db: Db, apiKey: string): Promise<UserRow | undefined> {
  return (await findApiKey(db, apiKey))?.user;
}

function bearerToken(req: Request): string | undefined {
  const header = req.get('authorization');
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
    /** The id of the API key the request authenticated with. */
    apiKeyId?: string;
  }
}

/**
 * Who holds an API key, remembered for AUTH_CACHE_MS per process: every request authenticates, and a database round trip
 * per request is the largest cost of a status read. Only keys that named a user are remembered (an attacker's guesses
 * are not), never past the moment a rotation retires them, and the cache is bounded. A key revoked through this process
 * is forgotten at once (forgetApiKeys); one revoked through another process stops working here within AUTH_CACHE_MS.
 */
export const AUTH_CACHE_MS = 5_000;
const AUTH_CACHE_MAX = 10_000;
interface KnownKey {
  user: UserRow;
  keyId: string;
  until: number;
}
interface AuthCache {
  known: Map<string, KnownKey>;
  /** Keys revoked through this process lately (id → when): a lookup that read the row before the revocation must not cache it. */
  forgotten: Map<string, number>;
}
const caches = new WeakMap<Db, AuthCache>();

function cacheOf(db: Db): AuthCache {
  let cache = caches.get(db);
  if (!cache) caches.set(db, (cache = { known: new Map(), forgotten: new Map() }));
  return cache;
}

async function keyHolder(db: Db, apiKey: string): Promise<KnownKey | undefined> {
  const { known, forgotten } = cacheOf(db);
  const now = Date.now();
  const hit = known.get(apiKey);
  if (hit && hit.until > now) return hit;
  const found = await findApiKey(db, apiKey);
  if (!found) {
    known.delete(apiKey);
    return undefined;
  }
  const holder = { user: found.user, keyId: found.keyId, until: Math.min(now + AUTH_CACHE_MS, found.revokedAt?.getTime() ?? Infinity) };
  if (forgotten.has(found.keyId)) return holder;
  if (known.size >= AUTH_CACHE_MAX) known.clear();
  known.set(apiKey, holder);
  return holder;
}

/** Drops these keys from this process's cache, so a revocation holds here from the next request. */
export function forgetApiKeys(db: Db, keyIds: Iterable<string>): void {
  const { known, forgotten } = cacheOf(db);
  const now = Date.now();
  for (const [id, at] of forgotten) if (at < now - AUTH_CACHE_MS) forgotten.delete(id);
  const ids = new Set(keyIds);
  for (const id of ids) forgotten.set(id, now);
  for (const [apiKey, holder] of known) if (ids.has(holder.keyId)) known.delete(apiKey);
}

export function requireUser(db: Db): RequestHandler {
  return async (req: Request, _res: Response, next: NextFunction) => {
    // An outer mount authenticated this request already (a stream of one job passes /v1/generations on its way).
    if (req.user) return next();
    const token = bearerToken(req);
    const known = token && token.length <= 200 ? await keyHolder(db, token) : undefined;
    if (!known) throw unauthorized();
    req.user = known.user;
    req.apiKeyId = known.keyId;
    next();
  };
}

export function requireAdmin(adminApiKey: string): RequestHandler {
  const expected = Buffer.from(hashApiKey(adminApiKey), 'hex');
  return (req, _res, next) => {
    const token = bearerToken(req);
    if (!token || !timingSafeEqual(Buffer.from(hashApiKey(token), 'hex'), expected)) throw unauthorized();
    next();
  };
}

/** The authenticated user of a route behind requireUser. */
export function currentUser(req: Request): UserRow {
  if (!req.user) throw unauthorized();
  return req.user;
}
