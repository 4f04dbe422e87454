import { and, eq, isNull } from 'drizzle-orm';
import type { Db, Sql } from './client';
import { generations, gpuQueueEntries } from './schema';

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
