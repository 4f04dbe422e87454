import { and, eq, isNull } from 'drizzle-orm';
import { reservationKey, undoReservation } from '../credits/ledger';
import type { Db, Sql } from '../db/client';
import type { Priority } from '../domain/generation';
import { generations, gpuQueueEntries, idempotencyKeys } from '../db/schema';

/**
 * The SQL of admission control, written once. All state lives in Postgres so every API instance sees the same buckets,
 * counts and bounds.
 */

/**
 * peekRequestTokens: the user's token bucket (rate_limit_buckets) at its level now, without taking one (a bucket never
 * used is full). Admission takes the tokens (vg_admit_submission): the row is refilled for the time since its last refill,
 * capped at `burst`, and one is taken if there is one, under the row's lock, so API instances take tokens in turn.
 */
export async function peekRequestTokens(sql: Sql, bucketKey: string, { burst, perSecond }: { burst: number; perSecond: number }): Promise<number> {
  const [row] = await sql<{ level: number }[]>`
    select least(${burst}::float8, tokens + greatest(0, extract(epoch from now() - refilled_at)) * ${perSecond}::float8) as level
    from rate_limit_buckets where bucket_key = ${bucketKey}`;
  return row?.level ?? burst;
}

export interface UserJobCounts {
  /** queued + running: projection rows below the terminal rank (an admission's answer: of the submit's lane). */
  active: number;
  /** Jobs created since midnight UTC, whatever became of them. */
  today: number;
}

/** countUserJobs: the user's active and today's jobs (vg_user_job_counts, drizzle/routines/user_job_counts.sql: kept by triggers, O(1)). */
export async function countUserJobs(sql: Sql, userId: string): Promise<UserJobCounts> {
  const [row] = await sql<UserJobCounts[]>`select active, today from vg_user_job_counts(${userId})`;
  return row;
}

/** countBatchJobs: the user's batch jobs queued or running (the batch lane's part of countUserJobs' active; O(1)). */
export async function countBatchJobs(sql: Sql, userId: string): Promise<number> {
  const [row] = await sql<{ active: number }[]>`select coalesce(max(batch_active), 0)::int as active from user_job_counts where user_id = ${userId}`;
  return row.active;
}

/** Which of the user's Idempotency-Keys name an earlier submit (a submit with one is a replay, never refused). */
export async function idempotencyKeysTaken(sql: Sql, userId: string, keys: string[]): Promise<Set<string>> {
  const rows = await sql<{ key: string }[]>`select key from idempotency_keys where user_id = ${userId} and key = any(${keys}::text[])`;
  return new Set(rows.map((row) => row.key));
}

export type AdmissionOutcome =
  | {
      outcome: 'admitted';
      tokens: number;
      counts: UserJobCounts;
      available: number;
      queue: { queuedBefore: number; oldestQueuedAt: Date | null };
      /** The transaction that wrote it (null for an estimate, which wrote nothing). */
      xid: bigint | null;
    }
  | { outcome: 'replay'; earlierHash: string; earlierAt: Date }
  | { outcome: 'rate_limited'; tokens: number }
  | { outcome: 'too_many_active_jobs' | 'daily_quota_exceeded' | 'capacity_exhausted'; tokens: number; counts: UserJobCounts }
  | { outcome: 'insufficient_credits'; tokens: number; counts: UserJobCounts; available: number };

/** What a submit asks admission: one object, sent to vg_admit_submission (drizzle/routines/admission.sql) as its claim. */
export interface SubmissionClaim {
  userId: string;
  bucketKey: string;
  rate: { burst: number; perSecond: number };
  maxActive: number;
  dailyQuota: number;
  /** The tier's backlog is at its bound (decided by the caller from the pool summary). */
  backlogFull: boolean;
  idempotencyKey: string | undefined;
  requestHash: string;
  jobId: string;
  credits: number;
  acceptedAt: Date;
  pool: string;
  tier: string;
  fairnessWeight: number;
  /** The queued row's prompt and params (projection.ts rowParams). */
  prompt: string;
  params: Record<string, unknown>;
  /** The job a rerun repeats (its queued row's retry_of); unset for a submit. */
  retryOf?: string;
  /** The job's lane (unset: interactive): maxActive is its limit, and the answer's counts and queue figures are its. */
  priority?: Priority;
}

/**
 * The claim as SQL reads it: one key per field of the type vg_admission_claim (drizzle/routines/admission.sql), which
 * the function fills from this object by name. The one place a SubmissionClaim meets SQL; a test holds its keys equal
 * to the type's fields.
 */
export function claimRecord(c: SubmissionClaim) {
  return {
    user_id: c.userId,
    bucket_key: c.bucketKey,
    burst: c.rate.burst,
    per_second: c.rate.perSecond,
    max_active: c.maxActive,
    daily_quota: c.dailyQuota,
    backlog_full: c.backlogFull,
    idempotency_key: c.idempotencyKey ?? null,
    request_hash: c.requestHash,
    job_id: c.jobId,
    credits: c.credits,
    // The submit's reservation is the job's first run's, settled and undone by this key.
    reservation_key: reservationKey(c.jobId),
    accepted_at: c.acceptedAt.toISOString(),
    pool: c.pool,
    tier: c.tier,
    fairness_weight: c.fairnessWeight,
    prompt: c.prompt,
    params: c.params,
    retry_of: c.retryOf ?? null,
    priority: c.priority ?? 'interactive',
  };
}

interface AdmissionRow {
  outcome: AdmissionOutcome['outcome'];
  tokens: number | null;
  active: number | null;
  today: number | null;
  available: number | null;
  earlier_hash: string | null;
  earlier_at: Date | string | null;
  queued_before: number | null;
  oldest_queued_at: Date | string | null;
  xid?: string | null;
}

const asDate = (value: Date | string | null) => (value === null ? null : new Date(value));

/**
 * admitSubmission: the whole admission of a submit in one round trip (vg_admit_submission,
 * drizzle/routines/admission.sql). Under the user's lock it tells a replay, takes a request token, checks the limits
 * and the credits, and when all pass writes the credit reservation, the key, the gpu queue entry and the queued row
 * (undoSubmission takes them back).
 */
export async function admitSubmission(sql: Sql, c: SubmissionClaim): Promise<AdmissionOutcome> {
  // The transaction's id, read after the function ran (it has one once the function wrote): the queue summary tells by it
  // whether a read saw this admission.
  const [row] = await sql<AdmissionRow[]>`
    select *, pg_current_xact_id_if_assigned()::text as xid from vg_admit_submission(${JSON.stringify(claimRecord(c))}::jsonb)`;
  return outcomeOf(row, c);
}

/**
 * estimateSubmission: what admitSubmission would answer for the claim now, with nothing written and no token taken
 * (vg_estimate_submission, drizzle/routines/estimate.sql: the same function, its writes rolled back).
 */
export async function estimateSubmission(sql: Sql, c: SubmissionClaim): Promise<AdmissionOutcome> {
  const [row] = await sql<AdmissionRow[]>`select * from vg_estimate_submission(${JSON.stringify(claimRecord(c))}::jsonb)`;
  return outcomeOf(row, c);
}

function outcomeOf(row: AdmissionRow, c: SubmissionClaim): AdmissionOutcome {
  const tokens = row.tokens ?? 0;
  const counts = { active: row.active ?? 0, today: row.today ?? 0 };
  switch (row.outcome) {
    case 'replay':
      return { outcome: 'replay', earlierHash: row.earlier_hash ?? '', earlierAt: asDate(row.earlier_at) ?? c.acceptedAt };
    case 'rate_limited':
      return { outcome: 'rate_limited', tokens };
    case 'admitted':
      return {
        outcome: 'admitted',
        tokens,
        counts,
        available: row.available ?? 0,
        queue: { queuedBefore: row.queued_before ?? 0, oldestQueuedAt: asDate(row.oldest_queued_at) },
        xid: row.xid ? BigInt(row.xid) : null,
      };
    case 'insufficient_credits':
      return { outcome: row.outcome, tokens, counts, available: row.available ?? 0 };
    default:
      return { outcome: row.outcome, tokens, counts };
  }
}

/**
 * undoSubmission, admitSubmission's inverse: undoes an admitted submit whose workflow Temporal refused to start (it
 * answered; a submit it could not be reached for is kept instead): its queued row, queue entry, idempotency key and credit
 * reservation, in one transaction, as if it had never been made, so the client's retry starts afresh. Only a row no
 * workflow run has opened (run_opened_at is null) is undone; returns whether it was.
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
