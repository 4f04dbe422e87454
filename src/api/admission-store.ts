import type { TransactionSql } from 'postgres';
import type { Sql } from '../db/client';

/**
 * The SQL of admission control, written once. All state lives in Postgres so every API instance sees the same buckets,
 * counts and bounds.
 */

export interface BucketState {
  allowed: boolean;
  /** Tokens left after this request (fractional: the bucket refills continuously). */
  tokens: number;
}

/**
 * takeRequestToken: the token bucket as one upsert. The row's tokens are refilled for the time since its last refill
 * (capped at `burst`), and one is taken if there is one; the decision and the new level come back together. The row is
 * locked by the upsert, so concurrent requests from several API instances take tokens one after another.
 */
export async function takeRequestToken(sql: Sql, bucketKey: string, { burst, perSecond }: { burst: number; perSecond: number }): Promise<BucketState> {
  const [row] = await sql<{ tokens: number; allowed: boolean }[]>`
    insert into rate_limit_buckets as b (bucket_key, tokens, refilled_at, last_allowed)
    values (${bucketKey}, ${burst - 1}::float8, now(), true)
    on conflict (bucket_key) do update set (tokens, refilled_at, last_allowed) = (
      select level - case when level >= 1 then 1 else 0 end, now(), level >= 1
      from (
        select least(${burst}::float8, b.tokens + greatest(0, extract(epoch from now() - b.refilled_at)) * ${perSecond}::float8) as level
      ) as refill
    )
    returning tokens, last_allowed as allowed`;
  return { allowed: row.allowed, tokens: row.tokens };
}

/** peekRequestTokens: the bucket's level now, without taking one (a bucket never used is full). */
export async function peekRequestTokens(sql: Sql, bucketKey: string, { burst, perSecond }: { burst: number; perSecond: number }): Promise<number> {
  const [row] = await sql<{ level: number }[]>`
    select least(${burst}::float8, tokens + greatest(0, extract(epoch from now() - refilled_at)) * ${perSecond}::float8) as level
    from rate_limit_buckets where bucket_key = ${bucketKey}`;
  return row?.level ?? burst;
}

export interface UserJobCounts {
  /** queued + running (projection rows below the terminal rank), and submits admitted but not yet written. */
  active: number;
  /** Jobs created since midnight UTC, whatever became of them, and submits admitted but not yet written. */
  today: number;
}

/** countUserJobs: one pass over the user's rows that are active or from today, plus the user's live reservations. */
export async function countUserJobs(sql: Sql | TransactionSql, userId: string): Promise<UserJobCounts> {
  const [row] = await sql<UserJobCounts[]>`
    select jobs.active + pending.n as active, jobs.today + pending.n as today
    from (
      select count(*) filter (where status_rank < 2)::int as active,
             count(*) filter (where created_at >= date_trunc('day', now(), 'UTC'))::int as today
      from generations
      where user_id = ${userId} and (status_rank < 2 or created_at >= date_trunc('day', now(), 'UTC'))
    ) as jobs, (
      select count(*)::int as n from admission_reservations where user_id = ${userId} and expires_at > now()
    ) as pending`;
  return row;
}

/**
 * reserveAdmission: in a short transaction holding the user's advisory lock, counts the user's jobs (reservations
 * included) and, when both limits leave room, reserves one. Concurrent submits of one user, on any API instance, are
 * counted one after another, and the lock is not held while the job is started.
 */
export async function reserveAdmission(
  sql: Sql,
  { reservationId, userId, maxActive, dailyQuota, ttlMs }: { reservationId: string; userId: string; maxActive: number; dailyQuota: number; ttlMs: number },
): Promise<{ reserved: boolean; counts: UserJobCounts }> {
  const [outcome] = await sql.begin(async (tx) => {
    await tx`select pg_advisory_xact_lock(hashtextextended(${`admission:${userId}`}, 0))`;
    await tx`delete from admission_reservations where user_id = ${userId} and expires_at <= now()`;
    const counts = await countUserJobs(tx, userId);
    if (counts.active >= maxActive || counts.today >= dailyQuota) return [{ reserved: false, counts }];
    await tx`
      insert into admission_reservations (id, user_id, expires_at)
      values (${reservationId}, ${userId}, now() + ${ttlMs}::int * interval '1 millisecond')`;
    return [{ reserved: true, counts }];
  });
  return outcome;
}

/** releaseAdmission: the submit is over (its row exists, or it failed): its reservation no longer counts. */
export async function releaseAdmission(sql: Sql, reservationId: string): Promise<void> {
  await sql`delete from admission_reservations where id = ${reservationId}`;
}

/** tierBacklog: jobs of the tier waiting for a GPU in this pool. */
export async function tierBacklog(sql: Sql, pool: string, tier: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`
    select count(*)::int as n
    from generations g join gpu_queue_entries e on e.job_id = g.id
    where g.status_rank = 0 and g.tier = ${tier} and e.pool = ${pool}`;
  return row.n;
}

/** recordQueueEntry: the job's pool, tier and weight, for backlog bounds and queue positions. Idempotent. */
export async function recordQueueEntry(
  sql: Sql,
  entry: { jobId: string; pool: string; userId: string; tier: string; fairnessWeight: number; admittedAt: Date },
): Promise<void> {
  await sql`
    insert into gpu_queue_entries (job_id, pool, user_id, tier, fairness_weight, admitted_at)
    values (${entry.jobId}, ${entry.pool}, ${entry.userId}, ${entry.tier}, ${entry.fairnessWeight}, ${entry.admittedAt.toISOString()})
    on conflict (job_id) do nothing`;
}

/** idempotencyKeyUsed: a submit with a key seen before is a replay (or a 422): admission neither refuses nor counts it. */
export async function idempotencyKeyUsed(sql: Sql, userId: string, key: string): Promise<boolean> {
  const rows = await sql`select 1 from idempotency_keys where user_id = ${userId} and key = ${key}`;
  return rows.length > 0;
}
