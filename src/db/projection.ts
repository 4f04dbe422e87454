import { and, eq, sql } from 'drizzle-orm';
import type { GenerationInput, ProjectionWrite } from '../domain/generation';
import { STATUS_RANK, statusesBefore, TERMINAL_RANK, type GenerationStatus } from '../domain/generation-state';
import { exactIsoFromTimestamptz, isoFromTimestamptz, isoString } from '../lib/iso-time';
import type { KeysetPosition } from './keyset';
import type { Db, Sql } from './client';
import { generations, type GenerationRow } from './schema';

/** The projection's columns, in the order GenerationRow names them. */
const COLUMNS =
  'id, user_id, tier, status, status_rank, prompt, params, attempt, progress, backend_job_id, dispatcher, run_opened_at, ' +
  'expected_done_at, video_url, error, created_at, started_at, completed_at, updated_at, retry_of, batch_id, backend, failed_over_from';

interface GenerationRecord {
  id: string;
  user_id: string;
  tier: string;
  status: GenerationStatus;
  status_rank: number;
  prompt: string;
  params: Record<string, unknown> | string;
  attempt: number;
  progress: number;
  backend_job_id: string | null;
  dispatcher: string | null;
  run_opened_at: Date | string | null;
  expected_done_at: Date | string | null;
  video_url: string | null;
  error: GenerationRow['error'] | string;
  created_at: Date | string;
  started_at: Date | string | null;
  completed_at: Date | string | null;
  updated_at: Date | string;
  retry_of: string | null;
  batch_id: string | null;
  backend: string | null;
  failed_over_from: string | null;
}

// drizzle's driver turns postgres.js's own timestamp parsing off on the shared client; raw reads get text back.
const json = <T>(value: T | string): T => (typeof value === 'string' ? (JSON.parse(value) as T) : value);

const exactTimeOf = (value: Date | string) => (typeof value === 'string' ? exactIsoFromTimestamptz(value) : isoString(value));

const isoOrNull = (value: Date | string | null) => (value === null ? null : typeof value === 'string' ? isoFromTimestamptz(value) : isoString(value));

/** Routing's bookkeeping of a waiting attempt (src/dispatch/queued-reroutes.ts): never shown. */
type QueuedRouteColumns = 'queuedOn' | 'queuedAttempt' | 'queuedAlternatives' | 'rerouteAskedAt';

/** A row of the list: what the API shows of a projection row, its times already as the API writes them. */
export type ListedGeneration = Omit<GenerationRow, 'runOpenedAt' | 'expectedDoneAt' | 'createdAt' | 'startedAt' | 'completedAt' | 'updatedAt' | QueuedRouteColumns> & {
  createdAt: string;
  startedAt: string | null;
  completedAt: string | null;
  updatedAt: string;
};

const toListed = (r: GenerationRecord): ListedGeneration => ({
  id: r.id,
  userId: r.user_id,
  tier: r.tier,
  status: r.status,
  statusRank: r.status_rank,
  prompt: r.prompt,
  params: json(r.params),
  attempt: r.attempt,
  progress: r.progress,
  backendJobId: r.backend_job_id,
  dispatcher: r.dispatcher,
  videoUrl: r.video_url,
  error: json(r.error),
  createdAt: isoOrNull(r.created_at) as string,
  startedAt: isoOrNull(r.started_at),
  completedAt: isoOrNull(r.completed_at),
  updatedAt: isoOrNull(r.updated_at) as string,
  retryOf: r.retry_of,
  batchId: r.batch_id,
  backend: r.backend,
  failedOverFrom: r.failed_over_from,
});

/** What the row keeps of a request besides its prompt. */
export function rowParams(request: GenerationInput['request']): Record<string, unknown> {
  return {
    duration_seconds: request.duration_seconds,
    resolution: request.resolution,
    aspect_ratio: request.aspect_ratio,
    seed: request.seed,
    webhook_url: request.webhook_url,
    metadata: request.metadata,
    // Only a batch job's row names its lane: an interactive row is as it was before lanes.
    ...(request.priority === 'batch' ? { priority: request.priority } : {}),
    ...(request.input_reference === undefined ? {} : { input_reference: request.input_reference }),
    ...(request.remix_of === undefined ? {} : { remix_of: request.remix_of }),
  };
}

/**
 * The queued row as vg_write_queued_generation (drizzle/routines/queued_generation.sql) writes it for a submit: what a
 * submit answers without reading it back (a test reads it back and compares).
 */
export function queuedRow(input: GenerationInput): GenerationRow {
  const acceptedAt = new Date(input.acceptedAt);
  return {
    id: input.jobId,
    userId: input.userId,
    tier: input.tier,
    status: 'queued',
    statusRank: STATUS_RANK.queued,
    prompt: input.request.prompt,
    params: rowParams(input.request),
    attempt: 0,
    progress: 0,
    backendJobId: null,
    dispatcher: null,
    runOpenedAt: null,
    expectedDoneAt: null,
    videoUrl: null,
    error: null,
    createdAt: acceptedAt,
    startedAt: null,
    completedAt: null,
    updatedAt: acceptedAt,
    retryOf: input.retryOf ?? null,
    batchId: null,
    backend: null,
    failedOverFrom: null,
    queuedOn: null,
    queuedAttempt: null,
    queuedAlternatives: null,
    rerouteAskedAt: null,
  };
}

/** What the queued row is written from: the job, without the run's settings. */
export type QueuedJob = Pick<GenerationInput, 'jobId' | 'userId' | 'tier' | 'request' | 'acceptedAt' | 'retryOf'>;

/** The queued row's one writer (vg_write_queued_generation), as the submit (no run) or a run's opening calls it. */
async function writeQueued(db: Db, input: QueuedJob, runOpenedAt: string | null): Promise<boolean> {
  const { request } = input;
  const [row] = await db.execute<{ wrote: boolean }>(sql`
    select vg_write_queued_generation(${input.jobId}, ${input.userId}, ${input.tier}, ${request.prompt},
      ${JSON.stringify(rowParams(request))}::jsonb, ${input.acceptedAt}::timestamptz, ${runOpenedAt}::timestamptz,
      ${input.retryOf ?? null}::text) as wrote`);
  return row.wrote;
}

/**
 * The projection writer. The queued row is written in one place, drizzle/routines/queued_generation.sql, whose function
 * the submit's admission calls first (in SQL), and:
 * - insertQueued creates the row once (a replay whose first submit left none calls it; then it is a no-op when the row
 *   is there) and returns it to the one that created it;
 * - openRun, a run's opening, stamps it with the run (below); a run's first write stamps a row no run has opened;
 * - applyWrite moves the row forward only: a write lands when (rank, attempt, progress) grows and the row is not terminal,
 *   so a replayed, duplicated or reordered write — from any process — never moves a job backwards.
 */
export async function insertQueued(db: Db, input: GenerationInput): Promise<GenerationRow | undefined> {
  return (await writeQueued(db, input, null)) ? queuedRow(input) : undefined; // undefined: the row was there already
}

/**
 * A run's opening (src/activities/lifecycle.ts createRunOpener): ties the row to this workflow run. For the first run (at
 * its GPU slot) it only stamps the row (creating it when admission's is gone); for a newer run (an operator reset the
 * workflow to retry the job; its first step) it reopens the row as queued. A replayed call changes nothing. One
 * statement, so an undo of the submit (src/api/admission-store.ts undoSubmission, which takes only rows no run has
 * opened) either comes first and the row is made again, or finds the row opened and leaves it.
 */
export async function openRun(db: Db, input: QueuedJob, runOpenedAt: string): Promise<boolean> {
  return writeQueued(db, input, runOpenedAt);
}

/**
 * The forward-only write as one statement text, so postgres.js prepares it once per connection: every job passes here
 * two to four times (acceptance, progress, its end), and building it through the query builder cost more CPU than the
 * statement itself (docs/decisions.md, "Worker CPU per job"). A field the write leaves out keeps its value; the start and
 * completion times are set once, the first writer wins. What the moved row returns is what the end metrics read.
 * A write of a run lands on its run's row or on a row no run has opened yet, which it then ties to its run: a first run
 * opens its row at its GPU slot, and one that ends before it gets one (canceled or timed out in the queue) has only its
 * ending's write to do so. A reset run opens its row before it writes (openRun), so an older run's writes miss it.
 */
const APPLY_WRITE = `
  update generations set
    status = $2, status_rank = $3::smallint, attempt = $4::int, progress = $5::real,
    backend_job_id = coalesce($6::text, backend_job_id),
    dispatcher = coalesce($7::text, dispatcher),
    backend = coalesce($15::text, backend),
    failed_over_from = coalesce($16::text, failed_over_from),
    expected_done_at = coalesce($8::timestamptz, expected_done_at),
    video_url = coalesce($9::text, video_url),
    error = coalesce($10::jsonb, error),
    started_at = coalesce(started_at, $11::timestamptz),
    completed_at = coalesce(completed_at, $12::timestamptz),
    run_opened_at = coalesce(run_opened_at, $13::timestamptz),
    updated_at = now()
  where id = $1
    and ($13::timestamptz is null or run_opened_at = $13::timestamptz or run_opened_at is null)
    and status_rank < ${TERMINAL_RANK}
    and status = any($14::text[])
    and (status_rank, attempt, progress) < ($3::smallint, $4::int, $5::real)
  returning tier, status,
    (extract(epoch from created_at) * 1000)::float8 as created_ms,
    (extract(epoch from started_at) * 1000)::float8 as started_ms,
    (extract(epoch from completed_at) * 1000)::float8 as completed_ms`;

/** What a write that moved the row returns: the row's tier and status, and its times (epoch ms). */
export interface MovedRow {
  tier: string;
  status: GenerationStatus;
  created_ms: number;
  started_ms: number | null;
  completed_ms: number | null;
}

/**
 * Moves the row forward (see insertQueued above): lands only when (rank, attempt, progress) grows, the move is one the
 * transition table allows, the row is not terminal and (for a workflow's write) the row is its run's. Returns the moved
 * row, or undefined when the write did not land.
 */
export async function applyWriteReturning(db: Db, write: ProjectionWrite): Promise<MovedRow | undefined> {
  const params = [
    write.jobId,
    write.status,
    STATUS_RANK[write.status],
    write.attempt,
    write.progress,
    write.backendJobId ?? null,
    write.dispatcher ?? null,
    write.expectedDoneAt || null,
    write.videoUrl ?? null,
    write.error ? JSON.stringify(write.error) : null,
    write.startedAt ?? null,
    write.completedAt ?? null,
    write.runOpenedAt || null,
    statusesBefore(write.status),
    write.backend ?? null,
    write.failedOverFrom ?? null,
  ];
  const [row] = await db.$client.unsafe<MovedRow[]>(APPLY_WRITE, params as never[], { prepare: true });
  return row;
}

/** Returns true when the write moved the row. */
export async function applyWrite(db: Db, write: ProjectionWrite): Promise<boolean> {
  return (await applyWriteReturning(db, write)) !== undefined;
}

/**
 * One job's row by id, as the list reads rows (SQL text, prepared once per connection): the notify step reads the
 * ended row of every job, for its notification and webhook body.
 */
export async function readGeneration(sql: Sql, jobId: string): Promise<ListedGeneration | undefined> {
  const [record] = await sql.unsafe<GenerationRecord[]>(`select ${COLUMNS} from generations where id = $1`, [jobId], { prepare: true });
  return record && toListed(record);
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
  after?: KeysetPosition;
  /** Only the items of this batch (served by generations_batch_idx). */
  batchId?: string;
}

/**
 * The keyset page statement (one row more than the page, to tell whether another page follows), served by
 * generations_user_created_idx. Written as SQL text with one shape per combination of filters, so each shape is a
 * prepared statement of its own: the list is the hottest read, and building it through the query builder cost more CPU
 * than the query itself.
 */
export function pageStatement(userId: string, query: ListQuery): { text: string; params: Array<string | number> } {
  const params: Array<string | number> = [userId];
  const param = (value: string | number) => `$${params.push(value)}`;
  const where = ['user_id = $1'];
  if (query.status) where.push(`status = ${param(query.status)}`);
  if (query.batchId) where.push(`batch_id = ${param(query.batchId)}`);
  if (query.createdAfter) where.push(`created_at > ${param(query.createdAfter.toISOString())}::timestamptz`);
  if (query.createdBefore) where.push(`created_at < ${param(query.createdBefore.toISOString())}::timestamptz`);
  if (query.after) {
    // A row comparison: one index range on (created_at, id), not an OR the planner must filter.
    where.push(`(created_at, id) < (${param(query.after.createdAt)}::timestamptz, ${param(query.after.id)})`);
  }
  const text = `select ${COLUMNS} from generations where ${where.join(' and ')} order by created_at desc, id desc limit ${param(query.limit + 1)}`;
  return { text, params };
}

/** A user's jobs, newest first, one keyset page. */
export async function listGenerations(sql: Sql, userId: string, query: ListQuery) {
  const { text, params } = pageStatement(userId, query);
  const records = await sql.unsafe<GenerationRecord[]>(text, params, { prepare: true });
  const rows = records.slice(0, query.limit).map(toListed);
  const last = records.length > query.limit ? records[query.limit - 1] : undefined;
  // The next page starts after the last row, at its exact time (the row's own shows milliseconds).
  const next: KeysetPosition | undefined = last && { createdAt: exactTimeOf(last.created_at), id: last.id };
  return { rows, hasMore: records.length > query.limit, next };
}

/** A user's jobs by the backend that ran them, with what they were charged (GET /v1/usage). Served by the user's index. */
export async function usageByBackend(db: Db, userId: string): Promise<Array<{ backend: string; jobs: number; succeeded: number; credits_used: number }>> {
  const rows = await db.execute<{ backend: string; jobs: number; succeeded: number; credits_used: number }>(sql`
    select g.backend, count(*)::int as jobs, count(*) filter (where g.status = 'succeeded')::int as succeeded,
           coalesce(sum(l.amount), 0)::int as credits_used
    from generations g
    left join credit_ledger l on l.job_id = g.id and l.kind = 'capture'
    where g.user_id = ${userId} and g.backend is not null
    group by g.backend order by g.backend`);
  return [...rows];
}
