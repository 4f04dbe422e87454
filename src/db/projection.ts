import { and, desc, eq, gt, inArray, isNull, lt, or, sql, type SQL } from 'drizzle-orm';
import type { GenerationInput, ProjectionWrite } from '../domain/generation';
import { STATUS_RANK, statusesBefore, TERMINAL_RANK, type GenerationStatus } from '../domain/generation-state';
import type { Db } from './client';
import { generations, type GenerationRow } from './schema';

/**
 * The projection writer. Two statements, both idempotent:
 * - insertQueued creates the row once (the API and the workflow's first step both call it; the second is a no-op);
 * - applyWrite moves the row forward only: a write lands when (rank, attempt, progress) grows and the row is not terminal,
 *   so a replayed, duplicated or reordered write — from any process — never moves a job backwards.
 */
export async function insertQueued(db: Db, input: GenerationInput): Promise<void> {
  const { request } = input;
  await db
    .insert(generations)
    .values({
      id: input.jobId,
      userId: input.userId,
      tier: input.tier,
      status: 'queued',
      statusRank: STATUS_RANK.queued,
      prompt: request.prompt,
      params: {
        duration_seconds: request.duration_seconds,
        resolution: request.resolution,
        aspect_ratio: request.aspect_ratio,
        seed: request.seed,
        webhook_url: request.webhook_url,
        metadata: request.metadata,
      },
      createdAt: new Date(input.acceptedAt),
    })
    .onConflictDoNothing({ target: generations.id });
}

/**
 * The workflow's first step: ties the row to this workflow run. For the first run it only stamps the row; for a newer run
 * (an operator reset the workflow to retry the job) it reopens the row as queued. A replayed call changes nothing.
 */
export async function openRun(db: Db, input: GenerationInput, runOpenedAt: string): Promise<boolean> {
  await insertQueued(db, input);
  const reopened = await db
    .update(generations)
    .set({
      status: 'queued',
      statusRank: STATUS_RANK.queued,
      attempt: 0,
      progress: 0,
      backendJobId: null,
      dispatcher: null,
      videoUrl: null,
      error: null,
      startedAt: null,
      completedAt: null,
      expectedDoneAt: null,
      runOpenedAt: new Date(runOpenedAt),
      updatedAt: sql`now()`,
    })
    .where(
      and(
        eq(generations.id, input.jobId),
        or(isNull(generations.runOpenedAt), lt(generations.runOpenedAt, new Date(runOpenedAt))),
      ),
    )
    .returning({ id: generations.id });
  return reopened.length > 0;
}

/** Returns true when the write moved the row. */
export async function applyWrite(db: Db, write: ProjectionWrite): Promise<boolean> {
  const rank = STATUS_RANK[write.status];
  const moved = await db
    .update(generations)
    .set({
      status: write.status,
      statusRank: rank,
      attempt: write.attempt,
      progress: write.progress,
      backendJobId: write.backendJobId ?? sql`${generations.backendJobId}`,
      dispatcher: write.dispatcher ?? sql`${generations.dispatcher}`,
      expectedDoneAt: write.expectedDoneAt ? new Date(write.expectedDoneAt) : sql`${generations.expectedDoneAt}`,
      videoUrl: write.videoUrl ?? sql`${generations.videoUrl}`,
      error: write.error ?? sql`${generations.error}`,
      startedAt: sql`coalesce(${generations.startedAt}, ${write.startedAt ?? null}::timestamptz)`,
      completedAt: sql`coalesce(${generations.completedAt}, ${write.completedAt ?? null}::timestamptz)`,
      updatedAt: sql`now()`,
    })
    .where(
      and(
        eq(generations.id, write.jobId),
        // Writes of an older workflow run (before an operator's reset) no longer apply.
        write.runOpenedAt ? eq(generations.runOpenedAt, new Date(write.runOpenedAt)) : undefined,
        lt(generations.statusRank, TERMINAL_RANK),
        // The transition table the workflow uses: only a legal move lands, then only a forward one.
        inArray(generations.status, statusesBefore(write.status)),
        sql`(${generations.statusRank}, ${generations.attempt}, ${generations.progress}) < (${rank}::smallint, ${write.attempt}::int, ${write.progress}::real)`,
      ),
    )
    .returning({ id: generations.id });
  return moved.length > 0;
}

export async function getGeneration(db: Db, userId: string, jobId: string): Promise<GenerationRow | undefined> {
  const [row] = await db
    .select()
    .from(generations)
    .where(and(eq(generations.id, jobId), eq(generations.userId, userId)));
  return row;
}

export interface ListQuery {
  status?: GenerationStatus;
  createdAfter?: Date;
  createdBefore?: Date;
  limit: number;
  /** Keyset position: the (created_at, id) of the last row of the previous page. */
  after?: { createdAt: Date; id: string };
}

/** A user's jobs, newest first, one keyset page (served by generations_user_created_idx). */
export async function listGenerations(db: Db, userId: string, query: ListQuery) {
  const rows = await pageQuery(db, userId, query);
  return { rows: rows.slice(0, query.limit), hasMore: rows.length > query.limit };
}

/** The keyset page query itself (one row more than the page, to tell whether another page follows). */
export function pageQuery(db: Db, userId: string, query: ListQuery) {
  const conditions: SQL[] = [eq(generations.userId, userId)];
  if (query.status) conditions.push(eq(generations.status, query.status));
  if (query.createdAfter) conditions.push(gt(generations.createdAt, query.createdAfter));
  if (query.createdBefore) conditions.push(lt(generations.createdAt, query.createdBefore));
  if (query.after) {
    const { createdAt, id } = query.after;
    // A row comparison: one index range on (created_at, id), not an OR the planner must filter.
    conditions.push(sql`(${generations.createdAt}, ${generations.id}) < (${createdAt.toISOString()}::timestamptz, ${id})`);
  }
  return db
    .select()
    .from(generations)
    .where(and(...conditions))
    .orderBy(desc(generations.createdAt), desc(generations.id))
    .limit(query.limit + 1);
}
