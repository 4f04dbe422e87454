import type { Config, TierLimits } from '../config';
import type { Sql } from '../db/client';
import type { UserRow } from '../db/schema';
import { rateLimitHeaders, secondsUntilUtcMidnight, type QuotaPolicyState } from './admission-headers';
import { admitSubmission, countBatchJobs, countUserJobs, estimateSubmission, idempotencyKeysTaken, peekRequestTokens, type AdmissionOutcome, type SubmissionClaim, type UserJobCounts } from './admission-store';
import { TokenBuckets } from './token-buckets';
import { ApiError } from '../wire/errors';
import type { QueuePositions, ServiceEstimate } from './queue-position';
import type { QueueInfo } from '../wire/serialize';
import { KeyProbes } from './key-probes';
import { rowParams } from '../db/projection';
import { firstJobPriority, priorityOf, type Priority } from '../domain/generation';
import { setRecent } from '../lib/recent-map';
import { replaySubmission, startAdmitted, type SubmitDeps, type SubmitResult, type Submission } from './submit';

/**
 * Admission control, in front of every new generation: the user's request rate (token bucket), active jobs and daily
 * quota by tier, and the tier's bound on the pool's backlog, which scales with live capacity (so when capacity falls the
 * smallest bound, the free tier's, is hit first). Every refusal is a 429 with a typed code, Retry-After and the IETF
 * RateLimit-Policy / RateLimit fields. A replay of an earlier submit (same Idempotency-Key) is neither refused nor counted.
 */
export type AdmissionRefusal = 'rate_limited' | 'too_many_active_jobs' | 'too_many_active_batch_jobs' | 'daily_quota_exceeded' | 'capacity_exhausted';

export interface Admitted {
  result: SubmitResult;
  /** A new job's place in the queue, known from admission (a replay's is looked up like any read's). */
  queue?: QueueInfo;
  headers: Record<string, string>;
}

export type Admission = ReturnType<typeof createAdmission>;

/** What a submit would get now (POST /v1/generations/estimate). */
export interface SubmissionEstimate {
  credits: number;
  admitted: boolean;
  /** The refusal a submit would get now: its code and message, as the submit's error would carry them. */
  refusal: { code: string; message: string } | null;
  /** Where it would start in the queue, when admitted. */
  queue: QueueInfo | null;
}

const clamp = (n: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, Math.ceil(n)));

/** How long the key look-ups of refused submits gather before one statement answers them all (src/api/key-probes.ts). */
const KEY_PROBE_LINGER_MS = 10;

/** Users whose empty buckets one process remembers at most (the one seen longest ago is forgotten first). */
const EMPTY_BUCKETS_MAX = 100_000;

export function createAdmission({ sql, config, queue }: { sql: Sql; config: Config; queue: QueuePositions }) {
  const { burst, refillPerSecond, tiers } = config.admission;
  const rate = { burst, perSecond: refillPerSecond };
  const bucketKey = (userId: string) => `user:${userId}`;

  function limitsOf(tier: string): TierLimits {
    const limits = tiers[tier];
    if (!limits) throw new Error(`no admission limits for tier "${tier}"`);
    return limits;
  }

  /** The limits a job of the lane counts against: the batch lane has its own active-job limit and backlog bound. */
  const laneLimits = (limits: TierLimits, priority: Priority) => (priority === 'batch' ? limits.batch : limits);
  const backlogBound = (limits: TierLimits, capacity: number, priority: Priority = 'interactive') =>
    Math.max(1, Math.ceil(laneLimits(limits, priority).backlogPerSlot * capacity));

  /**
   * Users whose token bucket Postgres last said was empty: its level then, and their job counts (for the RateLimit
   * fields). Until the bucket holds a token again, a submit of theirs would be refused there too — other API instances
   * can only have taken more — so it is refused here without the round trip, and a flood of submits costs Postgres
   * nothing after its first refusal. Forgotten once the bucket holds a token.
   */
  const keyProbes = new KeyProbes((userId, keys) => idempotencyKeysTaken(sql, userId, keys), KEY_PROBE_LINGER_MS);
  const emptyBuckets = new Map<string, { tokens: number; at: number; counts: UserJobCounts }>();
  /** Estimates per user in this process (bounded memory: TokenBuckets forgets the idlest users first). */
  const estimates = new TokenBuckets({ ...config.admission.estimates, maxKeys: EMPTY_BUCKETS_MAX });

  /** The bucket's level now when this process knows it is still below one token. */
  function knownEmpty(userId: string): { tokens: number; counts: UserJobCounts } | undefined {
    const seen = emptyBuckets.get(userId);
    if (!seen) return undefined;
    const tokens = seen.tokens + ((Date.now() - seen.at) / 1000) * refillPerSecond;
    if (tokens < 1) return { tokens, counts: seen.counts };
    emptyBuckets.delete(userId);
    return undefined;
  }

  /** `at`: when the statement that saw the level was sent, no later than Postgres's now(), so the level is never under-counted. */
  function rememberEmpty(userId: string, tokens: number, at: number, counts: UserJobCounts): void {
    setRecent(emptyBuckets, userId, { tokens, at, counts }, EMPTY_BUCKETS_MAX);
  }

  /**
   * The refusal a submit without an Idempotency-Key gets when the user's bucket is known to be empty: decided from the
   * user alone, before the request's body is read (src/api/early-refusals.ts answers a flood's submits with it unrouted).
   */
  function knownEmptyRefusal(user: { id: string; tier: string }): ApiError | undefined {
    const empty = knownEmpty(user.id);
    return empty && rateLimited(limitsOf(user.tier), empty.tokens, empty.counts);
  }

  /**
   * Refuses the submit here when the user's bucket is known to be empty; a replay (a known Idempotency-Key) never is.
   * Called first, before the body's checks (an input image is fetched to be checked): a refused submit costs nothing more.
   */
  async function refuseIfKnownEmpty(user: { id: string; tier: string }, idempotencyKey: string | undefined): Promise<void> {
    const refusal = knownEmptyRefusal(user);
    if (!refusal) return;
    // A keyed submit is refused only once its key is known to be new (one index probe for the keys of many refusals).
    if (idempotencyKey !== undefined && (await keyProbes.taken(user.id, idempotencyKey))) return;
    throw refusal;
  }

  /**
   * One admission per user at a time in this process. A user's concurrent submits would otherwise each hold a pooled
   * connection while they wait in Postgres for the user's lock (vg_admit_submission), and a flood of them would take the
   * whole pool from everyone else; here they wait without one, and the first refusal turns the rest away at once.
   */
  const turns = new Map<string, Promise<void>>();
  async function inTurn<T>(userId: string, run: () => Promise<T>): Promise<T> {
    const ahead = turns.get(userId);
    let done!: () => void;
    const mine = new Promise<void>((resolve) => (done = resolve));
    const last = (ahead ?? Promise.resolve()).then(() => mine);
    turns.set(userId, last);
    try {
      await ahead;
      return await run();
    } finally {
      done();
      if (turns.get(userId) === last) turns.delete(userId);
    }
  }

  const rateLimited = (limits: TierLimits, tokens: number, counts: UserJobCounts) =>
    refuse('rate_limited', `at most ${burst} requests at once and ${refillPerSecond} per second`, (1 - tokens) / refillPerSecond, policyStates(limits, tokens, counts), {
      limit: burst,
    });

  /** `counts.active` is the lane's when `priority` is given (an admission's answer), and so is the active quota. */
  function policyStates(limits: TierLimits, tokens: number, counts: UserJobCounts, priority: Priority = 'interactive'): QuotaPolicyState[] {
    const maxActive = laneLimits(limits, priority).maxActiveJobs;
    return [
      { policy: 'burst', quota: burst, windowSeconds: Math.ceil(burst / refillPerSecond), remaining: tokens, resetSeconds: (burst - tokens) / refillPerSecond },
      { policy: 'active', quota: maxActive, unit: 'concurrent-requests', remaining: maxActive - counts.active },
      { policy: 'daily', quota: limits.dailyQuota, windowSeconds: 86_400, remaining: limits.dailyQuota - counts.today, resetSeconds: secondsUntilUtcMidnight() },
    ];
  }

  function refuse(code: AdmissionRefusal, message: string, retryAfterSeconds: number, states: QuotaPolicyState[], details: Record<string, unknown>): ApiError {
    const retryAfter = Math.max(1, Math.ceil(retryAfterSeconds));
    return new ApiError(429, code, message, { ...details, retry_after_seconds: retryAfter }, { 'Retry-After': String(retryAfter), ...rateLimitHeaders(states) });
  }

  /** Seconds until one GPU slot frees, by recent GPU time; a guess when nothing finished lately. */
  const slotTurnover = (e: ServiceEstimate) => (e.meanRunSeconds === null ? 10 : e.meanRunSeconds / Math.max(1, e.capacity));

  /**
   * What admission decides for a submit: `ask` puts the claim to Postgres (the real admission, or its rolled-back estimate)
   * and the answer is mapped to the refusal a client gets, so a submit and an estimate are refused alike. The tier's
   * backlog comes from the pool's queue summary, decided on a fresh count when it looks full.
   */
  async function decide(submission: Submission, ask: (claim: SubmissionClaim) => Promise<AdmissionOutcome>) {
    const { user } = submission;
    const limits = limitsOf(user.tier);
    // A job counts against its lane's limits and backlog only: a batch backlog never refuses an interactive job.
    const priority = priorityOf(submission.request);
    // A bucket known to be empty was refused before this (the submit route does so first, an estimate once described).
    const [estimate, summarized] = await Promise.all([queue.serviceEstimate(), queue.tierBacklog(user.tier, { priority })]);
    const bound = backlogBound(limits, estimate.capacity, priority);
    // The summary may be out of date: a full backlog is decided on a fresh count, never on a stale one.
    let backlog = summarized;
    if (backlog >= bound) backlog = await queue.tierBacklog(user.tier, { fresh: true, priority });

    const fairnessWeight = config.generation.tierWeights[user.tier] ?? 1;
    const { admission, refusedCounts } = await inTurn(user.id, async () => {
      // A submit ahead of this one may have found the bucket empty meanwhile.
      await refuseIfKnownEmpty(user, submission.idempotencyKey);
      const askedAt = Date.now();
      const outcome = await ask({
        userId: user.id,
        bucketKey: bucketKey(user.id),
        rate,
        maxActive: laneLimits(limits, priority).maxActiveJobs,
        dailyQuota: limits.dailyQuota,
        backlogFull: backlog >= bound,
        idempotencyKey: submission.idempotencyKey,
        requestHash: submission.requestHash,
        jobId: submission.jobId,
        credits: submission.credits,
        acceptedAt: submission.acceptedAt,
        pool: queue.pool,
        tier: user.tier,
        fairnessWeight,
        prompt: submission.request.prompt,
        params: rowParams(submission.request),
        retryOf: submission.retryOf,
        priority,
      });
      if (outcome.outcome !== 'rate_limited') return { admission: outcome };
      // Whoever is next in line is refused at once, without a round trip.
      const counts = await countUserJobs(sql, user.id);
      rememberEmpty(user.id, outcome.tokens, askedAt, counts);
      return { admission: outcome, refusedCounts: counts };
    });
    const refusal = ((): ApiError | undefined => {
      switch (admission.outcome) {
        case 'replay':
        case 'admitted':
          return undefined;
        case 'rate_limited':
          return rateLimited(limits, admission.tokens, refusedCounts!);
        case 'too_many_active_jobs': {
          const { maxActiveJobs } = laneLimits(limits, priority);
          const states = policyStates(limits, admission.tokens, admission.counts, priority);
          const wait = clamp(estimate.meanRunSeconds ?? 10, 1, 600);
          if (priority === 'batch') {
            return refuse('too_many_active_batch_jobs', `a ${user.tier} user may have ${maxActiveJobs} batch jobs queued or running`, wait, states, {
              limit: maxActiveJobs,
              active: admission.counts.active,
              priority,
            });
          }
          return refuse('too_many_active_jobs', `a ${user.tier} user may have ${maxActiveJobs} jobs queued or running`, wait, states, { limit: maxActiveJobs, active: admission.counts.active });
        }
        case 'daily_quota_exceeded':
          return refuse('daily_quota_exceeded', `a ${user.tier} user may create ${limits.dailyQuota} jobs a day (UTC)`, secondsUntilUtcMidnight(),
            policyStates(limits, admission.tokens, admission.counts, priority), { limit: limits.dailyQuota });
        case 'capacity_exhausted':
          return refuse('capacity_exhausted', `the ${user.tier} tier's ${priority === 'batch' ? 'batch ' : ''}queue is full (${bound} jobs at the current GPU capacity)`,
            clamp((backlog - bound + 1) * slotTurnover(estimate), 1, 3_600), policyStates(limits, admission.tokens, admission.counts, priority),
            { tier: user.tier, priority, backlog, bound, capacity: estimate.capacity });
        case 'insufficient_credits':
          return new ApiError(402, 'insufficient_credits', `this generation costs ${submission.credits} credits; ${admission.available} available`, {
            needed: submission.credits,
            available: admission.available,
          });
      }
    })();
    return { admission, refusal, limits, fairnessWeight, priority };
  }

  /** A new job's place in the queue, from what admission read under the user's lock (no query of its own). */
  function placeOfNew(userId: string, fairnessWeight: number, priority: Priority, admitted: Extract<AdmissionOutcome, { outcome: 'admitted' }>, createdAt: Date): Promise<QueueInfo> {
    return queue.positionOfNew(userId, {
      weight: fairnessWeight,
      queuedBefore: admitted.queue.queuedBefore,
      oldestAt: (admitted.queue.oldestQueuedAt ?? createdAt).getTime(),
      priority,
    });
  }

  /**
   * Admits a submit and starts it, or refuses it. One round trip to Postgres (vg_admit_submission: replay, token bucket,
   * limits, key, credits, queue entry and queued row, decided under the user's lock and written together), then the
   * workflow start; the tier's backlog and the answer's queue position come from the pool's queue summary.
   */
  async function admit(submission: Submission, deps: SubmitDeps): Promise<Admitted> {
    const { user } = submission;
    const { admission, refusal, limits, fairnessWeight, priority } = await decide(submission, (claim) => admitSubmission(sql, claim));
    if (refusal) throw refusal;
    if (admission.outcome === 'replay') {
      return { result: await replaySubmission(deps, submission, { requestHash: admission.earlierHash, acceptedAt: admission.earlierAt }), headers: {} };
    }
    if (admission.outcome !== 'admitted') throw new Error(`admission answered ${admission.outcome} without a refusal`);

    // The admission's counts are the lane's: a user's first job in a lane is raised within it.
    const priorityKey = firstJobPriority(admission.counts.active, config.generation.firstJobPriority, priority);
    const generation = await startAdmitted(deps, submission, { priorityKey });
    // A summary read since the admission (a background refresh during the workflow start) may count this job already:
    // its snapshot tells.
    if (admission.xid !== null) queue.noteAdmitted({ xid: admission.xid, userId: user.id, tier: user.tier, weight: fairnessWeight, createdAt: generation.createdAt, priority });
    const { counts } = admission;
    const place = await placeOfNew(user.id, fairnessWeight, priority, admission, generation.createdAt);
    return {
      result: { generation, replayed: false },
      queue: place,
      headers: rateLimitHeaders(policyStates(limits, admission.tokens, { active: counts.active + 1, today: counts.today + 1 }, priority)),
    };
  }

  /**
   * What a submit of this request would get now, changing nothing (POST /v1/generations/estimate): its price, and either
   * the place it would start at or the refusal (code and message) a submit would get. The same decision as admit's, put
   * to vg_estimate_submission, which runs the admission and rolls its writes back: no token is taken, nothing is kept.
   * Estimates are paced per user in this process (they take no submit token, but each costs Postgres an admission).
   */
  async function estimateOf(user: UserRow, describe: () => Promise<Submission>): Promise<SubmissionEstimate> {
    // Paced before the request's inputs are checked: an estimate naming an image has it fetched (generation-inputs.ts).
    if (!estimates.take(user.id)) {
      const retryAfter = Math.max(1, Math.ceil(estimates.waitSeconds(user.id)));
      throw new ApiError(429, 'estimate_rate_limited', `at most ${config.admission.estimates.burst} estimates at once and ${config.admission.estimates.perSecond} per second`,
        { retry_after_seconds: retryAfter }, { 'Retry-After': String(retryAfter) });
    }
    const submission = await describe();
    let decided;
    try {
      await refuseIfKnownEmpty(user, undefined);
      decided = await decide(submission, (claim) => estimateSubmission(sql, claim));
    } catch (err) {
      // Refused in this process (the user's bucket is known to be empty): the refusal a submit would get.
      if (err instanceof ApiError && err.code === 'rate_limited') return { credits: submission.credits, admitted: false, refusal: { code: err.code, message: err.message }, queue: null };
      throw err;
    }
    const { admission, refusal, fairnessWeight, priority } = decided;
    if (refusal) return { credits: submission.credits, admitted: false, refusal: { code: refusal.code, message: refusal.message }, queue: null };
    if (admission.outcome !== 'admitted') throw new Error(`an estimate's admission answered ${admission.outcome}`);
    return { credits: submission.credits, admitted: true, refusal: null, queue: await placeOfNew(user.id, fairnessWeight, priority, admission, submission.acceptedAt) };
  }

  /** The user's limits and what is left of them (GET /v1/usage). */
  async function usage(user: UserRow) {
    const limits = limitsOf(user.tier);
    const [tokens, counts, batchActive, estimate] = await Promise.all([
      peekRequestTokens(sql, bucketKey(user.id), rate),
      countUserJobs(sql, user.id),
      countBatchJobs(sql, user.id),
      queue.serviceEstimate(),
    ]);
    const bound = backlogBound(limits, estimate.capacity);
    const batchBound = backlogBound(limits, estimate.capacity, 'batch');
    const backlog = await queue.tierBacklog(user.tier, { fresh: true });
    const batchBacklog = await queue.tierBacklog(user.tier, { priority: 'batch' });
    const interactiveActive = counts.active - batchActive;
    return {
      limits: {
        requests_burst: burst,
        requests_per_second: refillPerSecond,
        max_active_jobs: limits.maxActiveJobs,
        max_active_batch_jobs: limits.batch.maxActiveJobs,
        daily_quota: limits.dailyQuota,
        tier_backlog_bound: bound,
        tier_batch_backlog_bound: batchBound,
      },
      active_jobs: counts.active,
      active_batch_jobs: batchActive,
      used_today: counts.today,
      remaining: {
        requests: Math.max(0, Math.floor(tokens)),
        active_jobs: Math.max(0, limits.maxActiveJobs - interactiveActive),
        active_batch_jobs: Math.max(0, limits.batch.maxActiveJobs - batchActive),
        daily_quota: Math.max(0, limits.dailyQuota - counts.today),
        tier_backlog: Math.max(0, bound - backlog),
        tier_batch_backlog: Math.max(0, batchBound - batchBacklog),
      },
      daily_quota_resets_in_seconds: secondsUntilUtcMidnight(),
      gpu_capacity: estimate.capacity,
    };
  }

  return { admit, estimate: estimateOf, usage, refuseIfKnownEmpty, knownEmptyRefusal };
}
