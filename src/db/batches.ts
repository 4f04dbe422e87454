import { and, desc, eq, isNull, sql as raw } from 'drizzle-orm';
import type { Db, Sql } from './client';
import { afterPosition, exactTime, keysetPage, type KeysetPosition } from './keyset';
import { batches, type BatchRow } from './schema';

/** The reads and writes of batches (POST /v1/batches) besides their admission (drizzle/routines/batches.sql). */

export async function getBatch(db: Db, userId: string, batchId: string): Promise<BatchRow | undefined> {
  const [row] = await db
    .select()
    .from(batches)
    .where(and(eq(batches.id, batchId), eq(batches.userId, userId)));
  return row;
}

/** A user's batches, newest first, one keyset page (batches_user_created_idx). */
export async function listBatches(db: Db, userId: string, { limit, after }: { limit: number; after?: KeysetPosition }) {
  const found = await db
    .select({ row: batches, exactTime: exactTime(batches.createdAt) })
    .from(batches)
    .where(and(eq(batches.userId, userId), after ? afterPosition(batches.createdAt, batches.id, after) : undefined))
    .orderBy(desc(batches.createdAt), desc(batches.id))
    .limit(limit + 1);
  return keysetPage(found, limit);
}

/** The batch's items that are still queued with no workflow run yet: what a replay of the batch starts (again). */
export async function unstartedItemIds(sql: Sql, batchId: string): Promise<Set<string>> {
  const rows = await sql<{ id: string }[]>`
    select id from generations where batch_id = ${batchId} and status = 'queued' and run_opened_at is null`;
  return new Set(rows.map((r) => r.id));
}

/** The batch's items that have not ended (queued or running): what a cancel of the batch cancels. */
export async function unendedItemIds(sql: Sql, batchId: string): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`select id from generations where batch_id = ${batchId} and status_rank < 2`;
  return rows.map((r) => r.id);
}

/** Marks the batch as asked to cancel (the first time stays); the row as it is then. */
export async function markCancelRequested(db: Db, userId: string, batchId: string): Promise<BatchRow | undefined> {
  const [row] = await db
    .update(batches)
    .set({ cancelRequestedAt: raw`coalesce(${batches.cancelRequestedAt}, now())`, updatedAt: raw`now()` })
    .where(and(eq(batches.id, batchId), eq(batches.userId, userId), isNull(batches.completedAt)))
    .returning();
  return row;
}
