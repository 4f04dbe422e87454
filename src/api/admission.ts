import type { Config, TierLimits } from '../config';
import type { Sql } from '../db/client';
import type { UserRow } from '../db/schema';
import { rateLimitHeaders, secondsUntilUtcMidnight, type QuotaPolicyState } from './admission-headers';
import {
  countUserJobs,
  idempotencyKeyUsed,
  peekRequestTokens,
  recordQueueEntry,
  takeRequestToken,
  tierBacklog,
  withUserAdmissionLock,
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

// Connections that may hold a user's admission lock at once: the rest of the pool stays free for the submits themselves.
const LOCK_CONNECTIONS = 4;
const clamp = (n: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, Math.ceil(n)));

export function createAdmission({ sql, config, queue }: { sql: Sql; config: Config; queue: QueuePositions }) {
  const { burst, refillPerSecond, tiers } = config.admission;
  const rate = { burst, perSecond: refillPerSecond };
  const locks = new UserLocks(sql, LOCK_CONNECTIONS);
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

    return locks.run(user.id, async () => {
      // Checked again under the lock: a concurrent first submit with this key may have just claimed it.
      if (idempotencyKey && (await idempotencyKeyUsed(sql, user.id, idempotencyKey))) return { result: await submit(), headers: {} };
      const counts = await countUserJobs(sql, user.id);
      const states = policyStates(limits, bucket.tokens, counts);
      if (counts.active >= limits.maxActiveJobs) {
        const estimate = await queue.serviceEstimate();
        throw refuse('too_many_active_jobs', `a ${user.tier} user may have ${limits.maxActiveJobs} jobs queued or running`, clamp(estimate.meanRunSeconds ?? 10, 1, 600), states, {
          limit: limits.maxActiveJobs,
          active: counts.active,
        });
      }
      if (counts.today >= limits.dailyQuota) {
        throw refuse('daily_quota_exceeded', `a ${user.tier} user may create ${limits.dailyQuota} jobs a day (UTC)`, secondsUntilUtcMidnight(), states, {
          limit: limits.dailyQuota,
        });
      }
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
    });
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

/**
 * One submit per user at a time: in this process by a promise chain per user, across instances by the user's advisory
 * lock, held on one of a few connections so lock holders can never take the whole pool.
 */
class UserLocks {
  private readonly tails = new Map<string, Promise<void>>();
  private holders = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly sql: Sql,
    private readonly maxHolders: number,
  ) {}

  async run<T>(userId: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(userId) ?? Promise.resolve();
    let done!: () => void;
    const gate = new Promise<void>((resolve) => (done = resolve));
    const tail = previous.then(() => gate);
    this.tails.set(userId, tail);
    await previous;
    try {
      await this.acquireConnection();
      try {
        return await withUserAdmissionLock(this.sql, userId, fn);
      } finally {
        this.releaseConnection();
      }
    } finally {
      done();
      if (this.tails.get(userId) === tail) this.tails.delete(userId);
    }
  }

  private async acquireConnection(): Promise<void> {
    if (this.holders < this.maxHolders) {
      this.holders++;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  /** A waiter inherits the released place, so the count never overshoots. */
  private releaseConnection(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.holders--;
  }
}
