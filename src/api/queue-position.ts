import type { Config } from '../config';
import type { Sql } from '../db/client';
import { readCapacity } from '../dispatch/capacity';
import type { QueueInfo } from '../wire/serialize';
import { PoolSummaryCache } from './pool-summary-cache';

/**
 * Queue position and ETA of queued jobs, computed when read. Temporal's fairness serves backlogged users in proportion to
 * their weights, so the jobs ahead of a user's k-th queued job are the user's own k earlier ones plus, from every other
 * user, about as many as that user is served while this one is served k+1 times (ties go to the user waiting longest,
 * as Temporal breaks them by task age). The ETA divides the position by the pool's service rate: live capacity over the
 * mean GPU time of recent completions.
 */

export interface ServiceEstimate {
  capacity: number;
  /** Mean GPU time of jobs completed within the window; null when none was. */
  meanRunSeconds: number | null;
}

export interface UserQueue {
  weight: number;
  queued: number;
  /** When the user's oldest queued job was created (ms). */
  oldestAt: number;
}

/** Jobs ahead of a user's k-th queued job (0-based) under weighted fair dispatch. Pure. */
export function jobsAhead(k: number, self: UserQueue, others: UserQueue[]): number {
  const rounds = (k + 1) / self.weight;
  return others.reduce((ahead, other) => {
    const served = rounds * other.weight;
    const beforeUs = other.oldestAt <= self.oldestAt ? Math.floor(served) : Math.ceil(served) - 1;
    return ahead + Math.min(other.queued, beforeUs);
  }, k);
}

export function etaSeconds(position: number, estimate: ServiceEstimate): number | null {
  if (estimate.meanRunSeconds === null || estimate.capacity <= 0) return null;
  return Math.round((position * estimate.meanRunSeconds) / estimate.capacity);
}

const ESTIMATE_CACHE_MS = 1_000;
/** Completions the mean GPU time is taken over (the latest ones within the window). */
const ESTIMATE_SAMPLE = 200;
/** Each user's queued jobs, and each tier's total; what this process admitted since the read is added to both. */
interface PoolSummary {
  users: Map<string, UserQueue>;
  byTier: Map<string, number>;
}

/** Adds queued jobs to a user's queue in a summary: counts add up, the weight is the highest, the oldest the earliest. */
function addQueued(summary: PoolSummary, userId: string, tier: string, jobs: UserQueue): void {
  const seen = summary.users.get(userId);
  summary.users.set(userId, {
    weight: Math.max(seen?.weight ?? 0, jobs.weight),
    queued: (seen?.queued ?? 0) + jobs.queued,
    oldestAt: Math.min(seen?.oldestAt ?? Infinity, jobs.oldestAt),
  });
  summary.byTier.set(tier, (summary.byTier.get(tier) ?? 0) + jobs.queued);
}

export type QueuePositions = ReturnType<typeof createQueuePositions>;

export function createQueuePositions({ sql, config }: { sql: Sql; config: Config }) {
  const { pool, initialCapacity } = config.dispatch;
  const windowMs = config.admission.etaWindowMs;
  let cached: { at: number; value: ServiceEstimate } | undefined;

  /**
   * The pool's live capacity and recent GPU time: the mean over the pool's jobs among the latest ESTIMATE_SAMPLE
   * completions within the window, read from the newest end of generations_completed_idx (materialized first, so no
   * plan starts from the pool's queue entries), so its cost grows with neither the table, the day's admissions nor the
   * backlog. Cached a second so listing many jobs costs two queries.
   */
  async function serviceEstimate(): Promise<ServiceEstimate> {
    if (cached && Date.now() - cached.at < ESTIMATE_CACHE_MS) return cached.value;
    const [capacity, [recent]] = await Promise.all([
      readCapacity(sql, pool),
      sql<{ mean_run_s: number | null }[]>`
        with latest as materialized (
          select id, completed_at, started_at from generations
          where completed_at is not null and completed_at > now() - ${windowMs}::int * interval '1 millisecond'
          order by completed_at desc
          limit ${ESTIMATE_SAMPLE}
        )
        select avg(extract(epoch from l.completed_at - l.started_at))::float8 as mean_run_s
        from latest l
        -- Each one's entry by key (LIMIT keeps it a lookup per row, never a hash of the pool's entries).
        cross join lateral (select 1 from gpu_queue_entries e where e.job_id = l.id and e.pool = ${pool} limit 1) as e
        where l.started_at is not null`,
    ]);
    const value = { capacity: capacity?.capacity ?? initialCapacity, meanRunSeconds: recent.mean_run_s };
    cached = { at: Date.now(), value };
    return value;
  }

  /** Each user's queued jobs in the pool (how many, their weight, since when) and each tier's total; one grouped read. */
  async function readSummary(): Promise<PoolSummary> {
    const rows = await sql<{ user_id: string; tier: string; weight: number; queued: number; oldest_ms: number }[]>`
      select e.user_id, e.tier, max(e.fairness_weight)::float8 as weight, count(*)::int as queued,
             (extract(epoch from min(g.created_at)) * 1000)::float8 as oldest_ms
      from generations g join gpu_queue_entries e on e.job_id = g.id
      where g.status_rank = 0 and e.pool = ${pool}
      group by e.user_id, e.tier`;
    const read: PoolSummary = { users: new Map(), byTier: new Map() };
    for (const row of rows) addQueued(read, row.user_id, row.tier, { weight: row.weight, queued: row.queued, oldestAt: row.oldest_ms });
    return read;
  }

  const newestEventId = async () => {
    const [row] = await sql<{ id: string | null }[]>`select max(id) as id from generation_events`;
    return Number(row?.id ?? 0);
  };

  /** The pool summary, read again only after the change feed moved (pool-summary-cache.ts has the rules). */
  const summaries = new PoolSummaryCache<PoolSummary>({ newestEventId, read: readSummary });
  const poolSummary = async (mode: 'current' | 'cached' | 'fresh') => (await summaries.get(mode)).value;

  /**
   * Jobs of the tier waiting for a GPU in this pool, by the summary in hand (with what this process admitted since).
   * `fresh` reads the summary now; admission does so before refusing, so a stale summary never refuses a job there is
   * room for.
   */
  async function tierBacklog(tier: string, { fresh = false } = {}): Promise<number> {
    return (await poolSummary(fresh ? 'fresh' : 'cached')).byTier.get(tier) ?? 0;
  }

  /**
   * This process admitted a job: it counts in its tier's backlog and its user's queue at once, so what one API instance
   * admits is never missing from its own summary (another instance's admits, and jobs leaving the queue, show at the next
   * read).
   */
  function noteAdmitted({ userId, tier, weight, createdAt, committedAt }: { userId: string; tier: string; weight: number; createdAt: Date; committedAt: number }): void {
    const summary = summaries.inHand(committedAt);
    if (summary) addQueued(summary, userId, tier, { weight, queued: 1, oldestAt: createdAt.getTime() });
  }

  /**
   * Position and ETA of the user's queued jobs in this pool: of the given one, or of all of them. The user's own jobs
   * are read now (an index range of the user's queued rows); the other users' queues come from the summary.
   */
  async function positions(userId: string, only?: { id: string }): Promise<Map<string, QueueInfo>> {
    const [mine, byUser, estimate] = await Promise.all([
      sql<{ id: string; ahead: number; queued: number; weight: number; oldest_ms: number }[]>`
        select g.id, (row_number() over (order by g.created_at, g.id) - 1)::int as ahead, (count(*) over ())::int as queued,
               (max(e.fairness_weight) over ())::float8 as weight, (extract(epoch from min(g.created_at) over ()) * 1000)::float8 as oldest_ms
        from generations g
        -- The user's queued rows (generations_user_active_idx), then each one's entry by key (LIMIT keeps it a lookup
        -- per row: a plain join was planned as a scan of the whole pool's entries).
        cross join lateral (
          select q.fairness_weight from gpu_queue_entries q where q.job_id = g.id and q.pool = ${pool} limit 1
        ) as e
        where g.user_id = ${userId} and g.status_rank = 0`,
      poolSummary('current'),
      serviceEstimate(),
    ]);
    if (mine.length === 0) return new Map();
    const self: UserQueue = { weight: mine[0].weight, queued: mine[0].queued, oldestAt: mine[0].oldest_ms };
    const result = new Map<string, QueueInfo>();
    for (const { id, ahead: k } of mine) {
      if (!only || id === only.id) result.set(id, place(userId, k, self, byUser, estimate));
    }
    return result;
  }

  /**
   * The place of a job admitted just now, from what admission read under the user's lock: `queuedBefore` of the user's
   * jobs wait ahead of it, the oldest since `oldestAt` (ms). No query of its own.
   */
  async function positionOfNew(userId: string, { weight, queuedBefore, oldestAt }: { weight: number; queuedBefore: number; oldestAt: number }): Promise<QueueInfo> {
    const [byUser, estimate] = await Promise.all([poolSummary('cached'), serviceEstimate()]);
    return place(userId, queuedBefore, { weight, queued: queuedBefore + 1, oldestAt }, byUser, estimate);
  }

  function place(userId: string, k: number, self: UserQueue, byUser: PoolSummary, estimate: ServiceEstimate): QueueInfo {
    const others = [...byUser.users].filter(([id]) => id !== userId).map(([, queue]) => queue);
    const position = jobsAhead(k, self, others) + 1;
    return { position, etaSeconds: etaSeconds(position, estimate) };
  }

  return { pool, serviceEstimate, positions, positionOfNew, tierBacklog, noteAdmitted };
}
