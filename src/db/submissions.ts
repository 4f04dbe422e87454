import { and, eq, isNull } from 'drizzle-orm';
import { undoReservation } from '../credits/ledger';
import type { Db } from './client';
import { generations, gpuQueueEntries, idempotencyKeys } from './schema';

/**
 * Undoes an admitted submit whose workflow never started (the start failed, or the API died before it): its queued row,
 * queue entry, idempotency key and credit reservation, in one transaction, as if it had never been made, so the
 * client's retry starts afresh. Only a row no workflow run has opened (run_opened_at is null) is undone; returns whether
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
