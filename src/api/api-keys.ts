import { and, count, desc, eq, isNull, sql } from 'drizzle-orm';
import type { Db } from '../db/client';
import { apiKeys, users } from '../db/schema';
import { forgetApiKeys, insertApiKey, liveApiKey, type ApiKeyRow } from './auth';
import { ApiError } from '../wire/errors';

/**
 * The lifecycle of users' API keys: list, issue, rotate, revoke. Every change takes the user's row lock, so the bounds
 * hold under concurrent calls, and forgets revoked keys in this process's auth cache at once.
 */
export const MAX_LIVE_KEYS = 10;
/** Revoked keys kept per user (the newest), so the list stays useful and a rotation loop cannot grow the table. */
export const KEPT_REVOKED_KEYS = 20;
/** Long enough to roll a deployment over to the new key; a leaked key must not live on for days. */
export const MAX_ROTATION_GRACE_SECONDS = 86_400;

type Tx = Parameters<Parameters<Db['transaction']>[0]>[0];

export function toApiKeyResource(row: ApiKeyRow, now: Date = new Date()) {
  return {
    id: row.id,
    object: 'api_key' as const,
    user_id: row.userId,
    prefix: row.keyPrefix,
    status: row.revokedAt === null ? ('active' as const) : row.revokedAt > now ? ('expiring' as const) : ('revoked' as const),
    created_at: row.createdAt.toISOString(),
    revoked_at: row.revokedAt?.toISOString() ?? null,
  };
}

/** Locks the user's row for the transaction; false when there is no such user. */
async function lockUser(tx: Tx, userId: string): Promise<boolean> {
  const rows = await tx.select({ id: users.id }).from(users).where(eq(users.id, userId)).for('update');
  return rows.length > 0;
}

async function assertRoomForKey(tx: Tx, userId: string): Promise<void> {
  const [{ live }] = await tx.select({ live: count() }).from(apiKeys).where(and(eq(apiKeys.userId, userId), liveApiKey));
  if (live >= MAX_LIVE_KEYS) {
    throw new ApiError(409, 'too_many_api_keys', `at most ${MAX_LIVE_KEYS} working API keys per user: revoke one first, or rotate without a grace period`);
  }
}

async function pruneRevokedKeys(tx: Tx, userId: string): Promise<void> {
  await tx.execute(sql`
    delete from api_keys where id in (
      select id from api_keys where user_id = ${userId} and revoked_at <= now()
      order by revoked_at desc, id desc offset ${KEPT_REVOKED_KEYS})`);
}

/** The user's keys, newest first; undefined when there is no such user. */
export async function listApiKeys(db: Db, userId: string): Promise<ApiKeyRow[] | undefined> {
  const [user] = await db.select({ id: users.id }).from(users).where(eq(users.id, userId));
  if (!user) return undefined;
  return db.select().from(apiKeys).where(eq(apiKeys.userId, userId)).orderBy(desc(apiKeys.createdAt), desc(apiKeys.id));
}

/** A new key for the user (an operator's answer to a user locked out after a revocation); undefined when there is no such user. */
export async function issueApiKey(db: Db, userId: string): Promise<{ apiKey: string; key: ApiKeyRow } | undefined> {
  return db.transaction(async (tx) => {
    if (!(await lockUser(tx, userId))) return undefined;
    await assertRoomForKey(tx, userId);
    const issued = await insertApiKey(tx, userId);
    await pruneRevokedKeys(tx, userId);
    return issued;
  });
}

/**
 * Replaces the key a request used with a new one, returned once. The used key stops working after `graceSeconds` (0: at
 * once). A key already retiring cannot rotate: whoever holds a leaked key must not be able to mint a lasting one.
 */
export async function rotateApiKey(db: Db, userId: string, usedKeyId: string, graceSeconds: number) {
  const rotated = await db.transaction(async (tx) => {
    await lockUser(tx, userId);
    const [previous] = await tx
      .update(apiKeys)
      .set({ revokedAt: sql`now() + make_interval(secs => ${graceSeconds})` })
      .where(and(eq(apiKeys.id, usedKeyId), eq(apiKeys.userId, userId), isNull(apiKeys.revokedAt)))
      .returning();
    if (!previous) {
      throw new ApiError(409, 'api_key_retiring', 'this key was already rotated or revoked: rotate with the key that replaced it');
    }
    await assertRoomForKey(tx, userId);
    const issued = await insertApiKey(tx, userId);
    await pruneRevokedKeys(tx, userId);
    return { ...issued, previous };
  });
  forgetApiKeys(db, [usedKeyId]);
  return rotated;
}

/**
 * Revokes now the user's working keys (one of them with `keyId`), also those inside a rotation's grace period; a key
 * already revoked keeps its time. Returns the revoked rows, or undefined when the user (or that key of theirs) is unknown.
 */
export async function revokeApiKeys(db: Db, userId: string, keyId?: string): Promise<ApiKeyRow[] | undefined> {
  const revoked = await db.transaction(async (tx) => {
    if (!(await lockUser(tx, userId))) return undefined;
    const ofUser = keyId === undefined ? eq(apiKeys.userId, userId) : and(eq(apiKeys.userId, userId), eq(apiKeys.id, keyId));
    const now = await tx.update(apiKeys).set({ revokedAt: sql`now()` }).where(and(ofUser, liveApiKey)).returning();
    if (keyId === undefined || now.length > 0) return now;
    return tx.select().from(apiKeys).where(ofUser).then((rows) => (rows.length > 0 ? rows : undefined));
  });
  if (revoked) forgetApiKeys(db, revoked.map((key) => key.id));
  return revoked;
}
