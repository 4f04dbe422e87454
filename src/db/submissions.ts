import { and, eq, isNull } from 'drizzle-orm';
import { undoReservation } from '../credits/ledger';
import type { Db, Sql } from './client';
import { generations, gpuQueueEntries, idempotencyKeys } from './schema';

/**
 * What Postgres holds of an admitted submit whose workflow has not opened its row yet — the queued row (who, the request,
 * when accepted) and its gpu queue entry (pool and weight) — enough to rebuild the workflow's input; undefined once a
 * run has opened the row, or the job has ended or is gone.
 */
export async function readUnstartedJob(db: Db, jobId: string) {
  const [job] = await db
    .select({
      jobId: generations.id,
      userId: generations.userId,
      tier: generations.tier,
      prompt: generations.prompt,
      params: generations.params,
      acceptedAt: generations.createdAt,
      gpuTaskQueue: gpuQueueEntries.pool,
      fairnessWeight: gpuQueueEntries.fairnessWeight,
    })
    .from(generations)
    .leftJoin(gpuQueueEntries, eq(gpuQueueEntries.jobId, generations.id))
    .where(and(eq(generations.id, jobId), isNull(generations.runOpenedAt), eq(generations.status, 'queued')));
  return job;
}

export type UnstartedJob = NonNullable<Awaited<ReturnType<typeof readUnstartedJob>>>;

/** Which of these jobs are still queued with their row unopened by a run (one read for a batch of the start relay). */
export async function unstartedJobIds(sql: Sql, jobIds: string[]): Promise<Set<string>> {
  const rows = await sql<{ id: string }[]>`select id from generations where id = any(${jobIds}) and status = 'queued' and run_opened_at is null`;
  return new Set(rows.map((r) => r.id));
}

/**
 * Undoes an admitted submit whose workflow Temporal refused to start (it answered; a submit it could not be reached for
 * is kept instead): its queued row, queue entry, idempotency key and credit reservation, in one transaction, as if it
 * had never been made, so the client's retry starts afresh. Only a row no workflow run has opened (run_opened_at is null) is undone; returns whether
 * it was.
 */
export async function undoSubmission(db: Db, jobId: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const removed = await tx
      .delete(generations)
      .where(and(eq(generations.id, jobId), isNull(generations.runOpenedAt), eq(generations.status, 'queued')))
      .returning({ id: generations.id });
    if (removed.length === 0) return false;
    await tx.delete(gpuQueueEntries).where(eq(gpuQueueEntries.jobId, jobId));
    await tx.delete(idempotencyKeys).where(eq(idempotencyKeys.jobId, jobId));
    await undoReservation(tx, jobId);
    return true;
  });
}
