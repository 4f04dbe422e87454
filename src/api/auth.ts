import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { and, eq, isNull } from 'drizzle-orm';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import { grantCredits } from '../credits/ledger';
import type { Db } from '../db/client';
import { apiKeys, users, type UserRow } from '../db/schema';
import { ApiError } from './errors';

const KEY_PREFIX = 'vg_';

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key).digest('hex');
}

export function newApiKey(): string {
  return KEY_PREFIX + randomBytes(24).toString('base64url');
}

export function newId(prefix: string): string {
  return `${prefix}_${randomBytes(12).toString('hex')}`;
}

/** Creates a user with one API key; the key is returned here and never again (only its hash is stored). */
export async function createUser(db: Db, { name, tier, credits }: { name: string; tier: string; credits: number }) {
  const apiKey = newApiKey();
  const user = await db.transaction(async (tx) => {
    const [row] = await tx.insert(users).values({ id: newId('usr'), name, tier }).returning();
    await tx.insert(apiKeys).values({ id: newId('key'), userId: row.id, keyHash: hashApiKey(apiKey), keyPrefix: apiKey.slice(0, 8) });
    await grantCredits(tx, row.id, credits, `${row.id}:signup`);
    return row;
  });
  return { user, apiKey };
}

export async function findUserByApiKey(db: Db, apiKey: string): Promise<UserRow | undefined> {
  const [row] = await db
    .select({ user: users })
    .from(apiKeys)
    .innerJoin(users, eq(users.id, apiKeys.userId))
    .where(and(eq(apiKeys.keyHash, hashApiKey(apiKey)), isNull(apiKeys.revokedAt)));
  return row?.user;
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
  }
}

/**
 * Who holds an API key, remembered for AUTH_CACHE_MS per process: every request authenticates, and a database round trip
 * per request is the largest cost of a status read. Only keys that named a user are remembered (an attacker's guesses
 * are not), a revoked key stops working within AUTH_CACHE_MS, and the cache is bounded.
 */
const AUTH_CACHE_MS = 5_000;
const AUTH_CACHE_MAX = 10_000;
const knownKeys = new WeakMap<Db, Map<string, { user: UserRow; until: number }>>();

async function userOfKey(db: Db, apiKey: string): Promise<UserRow | undefined> {
  let cache = knownKeys.get(db);
  if (!cache) knownKeys.set(db, (cache = new Map()));
  const now = Date.now();
  const hit = cache.get(apiKey);
  if (hit && hit.until > now) return hit.user;
  const user = await findUserByApiKey(db, apiKey);
  if (!user) {
    cache.delete(apiKey);
    return undefined;
  }
  if (cache.size >= AUTH_CACHE_MAX) cache.clear();
  cache.set(apiKey, { user, until: now + AUTH_CACHE_MS });
  return user;
}

export function requireUser(db: Db): RequestHandler {
  return async (req: Request, _res: Response, next: NextFunction) => {
    // An outer mount authenticated this request already (a stream of one job passes /v1/generations on its way).
    if (req.user) return next();
    const token = bearerToken(req);
    const user = token && token.length <= 200 ? await userOfKey(db, token) : undefined;
    if (!user) throw unauthorized();
    req.user = user;
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
