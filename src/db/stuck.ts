import { and, asc, eq, lt, sql } from 'drizzle-orm';
import type { Db } from './client';
import { generations } from './schema';

/** Running jobs past the time they should have ended by: what an operator chases first. */
export async function listStuckGenerations(db: Db, { limit = 100 }: { limit?: number } = {}) {
  return db
    .select({
      id: generations.id,
      userId: generations.userId,
      tier: generations.tier,
      attempt: generations.attempt,
      backendJobId: generations.backendJobId,
      dispatcher: generations.dispatcher,
      startedAt: generations.startedAt,
      expectedDoneAt: generations.expectedDoneAt,
    })
    .from(generations)
    .where(and(eq(generations.status, 'running'), lt(generations.expectedDoneAt, sql`now()`)))
    .orderBy(asc(generations.expectedDoneAt))
    .limit(limit);
}
