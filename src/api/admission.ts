import { randomBytes } from 'node:crypto';
import type { Config, TierLimits } from '../config';
import type { Sql } from '../db/client';
import type { UserRow } from '../db/schema';
import { rateLimitHeaders, secondsUntilUtcMidnight, type QuotaPolicyState } from './admission-headers';
import {
  countUserJobs,
  idempotencyKeyUsed,
  peekRequestTokens,
  recordQueueEntry,
  releaseAdmission,
  reserveAdmission,
  takeRequestToken,
  tierBacklog,
  type UserJobCounts,
} from './admission-store';
import { ApiError } from './errors';
import type { QueuePositions, ServiceEstimate } from './queue-position';
import type { SubmitResult } from './submit';

/**
 * Admission control, in front of every new generation: the user's request rate (token bucket), active jobs and daily
 * quota by tier, and the tier's bound on the pool's backlog, which scales with live capacity (so when capacity falls the
 * smallest bound, the free tier's, is hit first). Every refusal is a 429 with a typed code, Retry-After and the IETF
 * RateLimit-Policy / RateLimit fields. A replay of an earlier submit (same Idempotency-Key) is neither refused nor counted.
 */
export type AdmissionRefusal = 'rate_limited' | 'too_many_active_jobs' | 'daily_quota_exceeded' | 'capacity_exhausted';

export interface Admitted {
  result: SubmitResult;
  headers: Record<string, string>;
}

export type Admission = ReturnType<typeof createAdmission>;

// Long enough for the slowest accepted start (Temporal's start deadline is 5 s); a crashed API's reservation then lapses.
const RESERVATION_TTL_MS = 30_000;
const clamp = (n: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, Math.ceil(n)));

export function createAdmission({ sql, config, queue }: { sql: Sql; config: Config; queue: QueuePositions }) {
  const { burst, refillPerSecond, tiers } = config.admission;
  const rate = { burst, perSecond: refillPerSecond };
  const bucketKey = (userId: string) => `user:${userId}`;

  function limitsOf(tier: string): TierLimits {
    const limits = tiers[tier];
    if (!limits) throw new Error(`no admission limits for tier "${tier}"`);
    return limits;
  }

  const backlogBound = (limits: TierLimits, capacity: number) => Math.max(1, Math.ceil(limits.backlogPerSlot * capacity));

  function policyStates(limits: TierLimits, tokens: number, counts: UserJobCounts): QuotaPolicyState[] {
    return [
      { policy: 'burst', quota: burst, windowSeconds: Math.ceil(burst / refillPerSecond), remaining: tokens, resetSeconds: (burst - tokens) / refillPerSecond },
      { policy: 'active', quota: limits.maxActiveJobs, unit: 'concurrent-requests', remaining: limits.maxActiveJobs - counts.active },
      { policy: 'daily', quota: limits.dailyQuota, windowSeconds: 86_400, remaining: limits.dailyQuota - counts.today, resetSeconds: secondsUntilUtcMidnight() },
    ];
  }

  function refuse(code: AdmissionRefusal, message: string, retryAfterSeconds: number, states: QuotaPolicyState[], details: Record<string, unknown>): ApiError {
    const retryAfter = Math.max(1, Math.ceil(retryAfterSeconds));
    return new ApiError(429, code, message, { ...details, retry_after_seconds: retryAfter }, { 'Retry-After': String(retryAfter), ...rateLimitHeaders(states) });
  }

  /** Seconds until one GPU slot frees, by recent GPU time; a guess when nothing finished lately. */
  const slotTurnover = (e: ServiceEstimate) => (e.meanRunSeconds === null ? 10 : e.meanRunSeconds / Math.max(1, e.capacity));

  async function admit(user: UserRow, idempotencyKey: string | undefined, submit: () => Promise<SubmitResult>): Promise<Admitted> {
    if (idempotencyKey && (await idempotencyKeyUsed(sql, user.id, idempotencyKey))) return { result: await submit(), headers: {} };
    const limits = limitsOf(user.tier);
    const bucket = await takeRequestToken(sql, bucketKey(user.id), rate);
    if (!bucket.allowed) {
      const states = policyStates(limits, bucket.tokens, await countUserJobs(sql, user.id));
      throw refuse('rate_limited', `at most ${burst} requests at once and ${refillPerSecond} per second`, (1 - bucket.tokens) / refillPerSecond, states, {
        limit: burst,
      });
    }

    // The user's active and daily limits: a reservation under the user's lock makes them exact across API instances.
    const reservationId = `adm_${randomBytes(10).toString('hex')}`;
    const { reserved, counts } = await reserveAdmission(sql, {
      reservationId,
      userId: user.id,
      maxActive: limits.maxActiveJobs,
      dailyQuota: limits.dailyQuota,
      ttlMs: RESERVATION_TTL_MS,
    });
    const states = policyStates(limits, bucket.tokens, counts);
    if (!reserved && counts.active >= limits.maxActiveJobs) {
      const estimate = await queue.serviceEstimate();
      throw refuse('too_many_active_jobs', `a ${user.tier} user may have ${limits.maxActiveJobs} jobs queued or running`, clamp(estimate.meanRunSeconds ?? 10, 1, 600), states, {
        limit: limits.maxActiveJobs,
        active: counts.active,
      });
    }
    if (!reserved) {
      throw refuse('daily_quota_exceeded', `a ${user.tier} user may create ${limits.dailyQuota} jobs a day (UTC)`, secondsUntilUtcMidnight(), states, {
        limit: limits.dailyQuota,
      });
    }

    try {
      const estimate = await queue.serviceEstimate();
      const bound = backlogBound(limits, estimate.capacity);
      const backlog = await tierBacklog(sql, queue.pool, user.tier);
      if (backlog >= bound) {
        throw refuse('capacity_exhausted', `the ${user.tier} tier's queue is full (${bound} jobs at the current GPU capacity)`,
          clamp((backlog - bound + 1) * slotTurnover(estimate), 1, 3_600), states, { tier: user.tier, backlog, bound, capacity: estimate.capacity });
      }

      const result = await submit();
      const { generation } = result;
      await recordQueueEntry(sql, {
        jobId: generation.id,
        pool: queue.pool,
        userId: user.id,
        tier: user.tier,
        fairnessWeight: config.generation.tierWeights[user.tier] ?? 1,
        admittedAt: generation.createdAt,
      });
      const added = result.replayed ? 0 : 1;
      return { result, headers: rateLimitHeaders(policyStates(limits, bucket.tokens, { active: counts.active + added, today: counts.today + added })) };
    } finally {
      await releaseAdmission(sql, reservationId);
    }
  }

  /** The user's limits and what is left of them (GET /v1/usage). */
  async function usage(user: UserRow) {
    const limits = limitsOf(user.tier);
    const [tokens, counts, estimate] = await Promise.all([peekRequestTokens(sql, bucketKey(user.id), rate), countUserJobs(sql, user.id), queue.serviceEstimate()]);
    const bound = backlogBound(limits, estimate.capacity);
    const backlog = await tierBacklog(sql, queue.pool, user.tier);
    return {
      limits: {
        requests_burst: burst,
        requests_per_second: refillPerSecond,
        max_active_jobs: limits.maxActiveJobs,
        daily_quota: limits.dailyQuota,
        tier_backlog_bound: bound,
      },
      active_jobs: counts.active,
      used_today: counts.today,
      remaining: {
        requests: Math.max(0, Math.floor(tokens)),
        active_jobs: Math.max(0, limits.maxActiveJobs - counts.active),
        daily_quota: Math.max(0, limits.dailyQuota - counts.today),
        tier_backlog: Math.max(0, bound - backlog),
      },
      daily_quota_resets_in_seconds: secondsUntilUtcMidnight(),
      gpu_capacity: estimate.capacity,
    };
  }

  return { admit, usage };
}
