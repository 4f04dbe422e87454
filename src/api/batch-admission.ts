import { createHash, randomBytes } from 'node:crypto';
import { eq, inArray, sql as raw } from 'drizzle-orm';
import type { Config, TierLimits } from '../config';
import { reservationKey, undoReservation } from '../credits/ledger';
import type { Db, Sql } from '../db/client';
import { rowParams } from '../db/projection';
import { batches, generations, gpuQueueEntries, idempotencyKeys, type UserRow } from '../db/schema';
import { priorityOf, type GenerationRequest, type Priority } from '../domain/generation';
import { ApiError } from '../wire/errors';
import { rateLimitHeaders, secondsUntilUtcMidnight, type QuotaPolicyState } from './admission-headers';
import type { QueuePositions } from './queue-position';
import { reservedPrice } from './submit';

/**
 * A batch's admission: all items or none. One round trip (vg_admit_batch, drizzle/routines/batches.sql) decides and
 * writes the whole batch under the user's admission lock, with the refusals a submit gets (the same codes, messages,
 * Retry-After and RateLimit fields), each counting every item: the batch takes one request token, and its items count
 * against the daily quota and the credits together, and against their own lane's active jobs and backlog bound (an
 * item with priority "batch" against the batch lane's, the others against the interactive lane's), as a submit does.
 */

/** A batch before admission: its id, its items' job ids and prices, and its request's hash. */
export interface BatchSubmission {
  user: UserRow;
  items: GenerationRequest[];
  idempotencyKey: string | undefined;
  batchId: string;
  jobIds: string[];
  credits: number[];
  requestHash: string;
  acceptedAt: Date;
}

const digest = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 32);

/**
 * Ids from (user, key): every retry of one batch names the same batch and the same item jobs. The item ids cannot meet
 * a submit's (src/api/submit.ts jobIdFor hashes `user\nkey`, and a key holds no newline).
 */
export function describeBatch(config: Config, user: UserRow, items: GenerationRequest[], idempotencyKey: string | undefined): BatchSubmission {
  const seed = idempotencyKey === undefined ? randomBytes(16).toString('hex') : digest(`${user.id}\nbatch\n${idempotencyKey}`);
  return {
    user,
    items,
    idempotencyKey,
    batchId: `batch_${seed}`,
    jobIds: items.map((_, i) => `gen_${digest(`${seed}\nitem\n${i}`)}`),
    credits: items.map((item) => reservedPrice(config, item)),
    // `batch` keeps a batch's hash apart from any submit's: one key cannot name both.
    requestHash: createHash('sha256').update(JSON.stringify({ batch: items })).digest('hex'),
    acceptedAt: new Date(),
  };
}

export type BatchAdmission =
  /** `active` and `today` count the batch's items; `active` is the answer lane's (the interactive one's when the batch holds both). */
  | { outcome: 'admitted'; tokens: number; active: number; today: number; lane: Priority; xid: bigint | null }
  | { outcome: 'replay'; earlierHash: string; earlierId: string };

interface BatchAdmissionRow {
  outcome:
    | 'admitted'
    | 'replay'
    | 'rate_limited'
    | 'too_many_active_jobs'
    | 'too_many_active_batch_jobs'
    | 'daily_quota_exceeded'
    | 'capacity_exhausted'
    | 'insufficient_credits';
  tokens: number | null;
  active: number | null;
  batch_active: number | null;
  today: number | null;
  available: number | null;
  needed: number | null;
  earlier_hash: string | null;
  earlier_id: string | null;
  xid: string | null;
}

const clamp = (n: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, Math.ceil(n)));

/** How many of the batch's items are in each lane. */
function itemsByLane(items: GenerationRequest[]): Record<Priority, number> {
  const batch = items.filter((item) => priorityOf(item) === 'batch').length;
  return { interactive: items.length - batch, batch };
}

/** The limits a lane's items count against: the batch lane has its own active-job limit and backlog bound. */
const laneLimits = (limits: TierLimits, lane: Priority) => (lane === 'batch' ? limits.batch : limits);

/**
 * The RateLimit fields of a batch's answer. The active quota is the lane's whose items the batch holds (the interactive
 * lane's when it holds both); `active` counts that lane's jobs, the batch's own `added` included once admitted.
 */
function batchPolicyStates(config: Config, limits: TierLimits, lane: Priority, { tokens, active, today }: { tokens: number; active: number; today: number }): QuotaPolicyState[] {
  const { burst, refillPerSecond } = config.admission;
  const maxActive = laneLimits(limits, lane).maxActiveJobs;
  return [
    { policy: 'burst', quota: burst, windowSeconds: Math.ceil(burst / refillPerSecond), remaining: tokens, resetSeconds: (burst - tokens) / refillPerSecond },
    { policy: 'active', quota: maxActive, unit: 'concurrent-requests', remaining: maxActive - active },
    { policy: 'daily', quota: limits.dailyQuota, windowSeconds: 86_400, remaining: limits.dailyQuota - today, resetSeconds: secondsUntilUtcMidnight() },
  ];
}

/** Admits the batch (everything written) or throws the refusal the whole batch gets. */
export async function admitBatch({ sql, config, queue }: { sql: Sql; config: Config; queue: QueuePositions }, batch: BatchSubmission): Promise<BatchAdmission> {
  const { user } = batch;
  const { burst, refillPerSecond } = config.admission;
  const limits: TierLimits | undefined = config.admission.tiers[user.tier];
  if (!limits) throw new Error(`no admission limits for tier "${user.tier}"`);
  const count = batch.items.length;
  const lanes = itemsByLane(batch.items);
  const estimate = await queue.serviceEstimate();
  // Each lane's backlog against its bound, for the lanes the batch has items in; a full one is decided on a fresh count,
  // never on a stale summary.
  const backlogs = await Promise.all(
    (['interactive', 'batch'] as const).map(async (lane) => {
      const bound = Math.max(1, Math.ceil(laneLimits(limits, lane).backlogPerSlot * estimate.capacity));
      if (lanes[lane] === 0) return { lane, backlog: 0, bound, full: false };
      let backlog = await queue.tierBacklog(user.tier, { priority: lane });
      if (backlog + lanes[lane] > bound) backlog = await queue.tierBacklog(user.tier, { fresh: true, priority: lane });
      return { lane, backlog, bound, full: backlog + lanes[lane] > bound };
    }),
  );
  const fairnessWeight = config.generation.tierWeights[user.tier] ?? 1;

  const claim = {
    user_id: user.id,
    bucket_key: `user:${user.id}`,
    burst,
    per_second: refillPerSecond,
    max_active: limits.maxActiveJobs,
    max_active_batch: limits.batch.maxActiveJobs,
    daily_quota: limits.dailyQuota,
    backlog_full: backlogs[0].full,
    batch_backlog_full: backlogs[1].full,
    idempotency_key: batch.idempotencyKey ?? null,
    request_hash: batch.requestHash,
    batch_id: batch.batchId,
    accepted_at: batch.acceptedAt.toISOString(),
    pool: queue.pool,
    tier: user.tier,
    fairness_weight: fairnessWeight,
  };
  const items = batch.items.map((request, i) => ({
    job_id: batch.jobIds[i],
    prompt: request.prompt,
    params: rowParams(request),
    credits: batch.credits[i],
    reservation_key: reservationKey(batch.jobIds[i]),
    priority: priorityOf(request),
  }));
  const [row] = await sql<BatchAdmissionRow[]>`
    select *, pg_current_xact_id_if_assigned()::text as xid from vg_admit_batch(${JSON.stringify(claim)}::jsonb, ${JSON.stringify(items)}::jsonb)`;

  const tokens = row.tokens ?? 0;
  const today = row.today ?? 0;
  const refuse = (lane: Priority, active: number, code: string, message: string, retryAfterSeconds: number, details: Record<string, unknown>) => {
    const retryAfter = Math.max(1, Math.ceil(retryAfterSeconds));
    return new ApiError(429, code, message, { ...details, items: count, retry_after_seconds: retryAfter }, {
      'Retry-After': String(retryAfter),
      ...rateLimitHeaders(batchPolicyStates(config, limits, lane, { tokens, active, today })),
    });
  };
  const answerLane: Priority = lanes.interactive > 0 ? 'interactive' : 'batch';
  const laneActive = (lane: Priority) => (lane === 'batch' ? row.batch_active : row.active) ?? 0;
  const activeWait = clamp(estimate.meanRunSeconds ?? 10, 1, 600);
  switch (row.outcome) {
    case 'admitted':
      return { outcome: 'admitted', tokens, active: laneActive(answerLane) + lanes[answerLane], today: today + count, lane: answerLane, xid: row.xid ? BigInt(row.xid) : null };
    case 'replay':
      return { outcome: 'replay', earlierHash: row.earlier_hash ?? '', earlierId: row.earlier_id ?? '' };
    case 'rate_limited':
      throw refuse(answerLane, laneActive(answerLane), 'rate_limited', `at most ${burst} requests at once and ${refillPerSecond} per second`, (1 - tokens) / refillPerSecond, { limit: burst });
    case 'too_many_active_jobs': {
      const active = laneActive('interactive');
      throw refuse('interactive', active, 'too_many_active_jobs', `a ${user.tier} user may have ${limits.maxActiveJobs} jobs queued or running; this batch would make ${active + lanes.interactive}`,
        activeWait, { limit: limits.maxActiveJobs, active });
    }
    case 'too_many_active_batch_jobs': {
      const active = laneActive('batch');
      throw refuse('batch', active, 'too_many_active_batch_jobs',
        `a ${user.tier} user may have ${limits.batch.maxActiveJobs} batch jobs queued or running; this batch would make ${active + lanes.batch}`,
        activeWait, { limit: limits.batch.maxActiveJobs, active, priority: 'batch' });
    }
    case 'daily_quota_exceeded':
      throw refuse(answerLane, laneActive(answerLane), 'daily_quota_exceeded', `a ${user.tier} user may create ${limits.dailyQuota} jobs a day (UTC); this batch would make ${today + count}`,
        secondsUntilUtcMidnight(), { limit: limits.dailyQuota });
    case 'capacity_exhausted': {
      const { lane, backlog, bound } = backlogs.find((b) => b.full) ?? backlogs[0];
      const turnover = estimate.meanRunSeconds === null ? 10 : estimate.meanRunSeconds / Math.max(1, estimate.capacity);
      throw refuse(lane, laneActive(lane), 'capacity_exhausted',
        `the ${user.tier} tier's ${lane === 'batch' ? 'batch ' : ''}queue cannot take ${lanes[lane]} more jobs (${bound} at the current GPU capacity)`,
        clamp((backlog + lanes[lane] - bound) * turnover, 1, 3_600), { tier: user.tier, priority: lane, backlog, bound, capacity: estimate.capacity });
    }
    case 'insufficient_credits':
      throw new ApiError(402, 'insufficient_credits', `this batch costs ${row.needed} credits; ${row.available} available`, {
        needed: row.needed,
        available: row.available,
      });
  }
}

/** The RateLimit fields of an admitted batch's answer (its items counted). */
export function admittedBatchHeaders(config: Config, batch: BatchSubmission, admitted: Extract<BatchAdmission, { outcome: 'admitted' }>): Record<string, string> {
  return rateLimitHeaders(batchPolicyStates(config, config.admission.tiers[batch.user.tier], admitted.lane, admitted));
}

/** The batch's items per lane, for the queue summary of the process that admitted them. */
export function admittedLanes(batch: BatchSubmission): { priority: Priority; jobs: number }[] {
  const lanes = itemsByLane(batch.items);
  return (['interactive', 'batch'] as const).filter((lane) => lanes[lane] > 0).map((priority) => ({ priority, jobs: lanes[priority] }));
}

/**
 * A whole batch undone, as if it had never been admitted (Temporal refused to start its first item, so none runs): its
 * rows, queue entries, reservations, key and batch row, in one transaction. Only when no item has been opened by a run
 * (a concurrent replay may have started some); otherwise nothing is undone and false is answered.
 */
export async function undoBatch(db: Db, batchId: string): Promise<boolean> {
  return db.transaction(async (tx) => {
    const [batch] = await tx.select({ id: batches.id }).from(batches).where(eq(batches.id, batchId)).for('update');
    if (!batch) return false;
    const items = await tx
      .select({ id: generations.id, opened: raw<boolean>`${generations.runOpenedAt} is not null or ${generations.status} <> 'queued'` })
      .from(generations)
      .where(eq(generations.batchId, batchId));
    if (items.some((item) => item.opened)) return false;
    const ids = items.map((item) => item.id);
    if (ids.length > 0) {
      await tx.delete(generations).where(inArray(generations.id, ids));
      await tx.delete(gpuQueueEntries).where(inArray(gpuQueueEntries.jobId, ids));
      for (const id of ids) await undoReservation(tx, id);
    }
    await tx.delete(idempotencyKeys).where(eq(idempotencyKeys.jobId, batchId));
    await tx.delete(batches).where(eq(batches.id, batchId));
    return true;
  });
}
