import type { Config } from '../config';
import type { Sql } from '../db/client';
import { readCapacity, readTotalCapacity } from '../dispatch/capacity';
import type { QueueInfo } from '../wire/serialize';
import { parseSnapshot, PoolSummaryCache, type Snapshot } from './pool-summary-cache';
import type { Priority } from '../domain/generation';
import { RefreshingValue } from '../lib/refreshing-value';

const laneOf = (lane: string): Priority => (lane === 'batch' ? 'batch' : 'interactive');

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
/**
 * Older than this, a caller waits for the estimate's read rather than take the one in hand: the capacity admission bounds
 * a backlog by is at most this old.
 */
const ESTIMATE_MAX_AGE_MS = 2_000;
/** Completions the mean GPU time is taken over (the latest ones within the window). */
const ESTIMATE_SAMPLE = 200;
/** One lane's queue: each user's queued jobs, each tier's total, and the whole lane's. */
interface LaneSummary {
  users: Map<string, UserQueue>;
  byTier: Map<string, number>;
  queued: number;
}

/** The pool's queue by lane; what this process admitted since the read is added to it. */
type PoolSummary = Record<Priority, LaneSummary>;

const emptySummary = (): PoolSummary => ({
  interactive: { users: new Map(), byTier: new Map(), queued: 0 },
  batch: { users: new Map(), byTier: new Map(), queued: 0 },
});

/** Adds queued jobs to a user's queue in a lane: counts add up, the weight is the highest, the oldest the earliest. */
function addQueued(summary: PoolSummary, priority: Priority, userId: string, tier: string, jobs: UserQueue): void {
  const lane = summary[priority];
  const seen = lane.users.get(userId);
  lane.users.set(userId, {
    weight: Math.max(seen?.weight ?? 0, jobs.weight),
    queued: (seen?.queued ?? 0) + jobs.queued,
    oldestAt: Math.min(seen?.oldestAt ?? Infinity, jobs.oldestAt),
  });
  lane.byTier.set(tier, (lane.byTier.get(tier) ?? 0) + jobs.queued);
  lane.queued += jobs.queued;
}

export type QueuePositions = ReturnType<typeof createQueuePositions>;

export function createQueuePositions({ sql, config }: { sql: Sql; config: Config }) {
  const { pool, initialCapacity } = config.dispatch;
  const windowMs = config.admission.etaWindowMs;
  /**
   * The pool's live capacity and recent GPU time: the mean over the pool's jobs among the latest ESTIMATE_SAMPLE
   * completions within the window, read from the newest end of generations_completed_idx (materialized first, so no
   * plan starts from the pool's queue entries), so its cost grows with neither the table, the day's admissions nor the
   * backlog.
   */
  async function readServiceEstimate(): Promise<ServiceEstimate> {
    // With several backends, their pools together (each runs jobs of the one queue the positions count).
    const [capacity, [recent]] = await Promise.all([
      config.routing.enabled ? readTotalCapacity(sql, config.dispatch.pools).then((n) => ({ capacity: n })) : readCapacity(sql, pool),
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
    return { capacity: capacity?.capacity ?? initialCapacity, meanRunSeconds: recent.mean_run_s };
  }

  /**
   * The estimate, read at most once a second per process however many lists and submits ask; past that second the one
   * in hand answers while the next is read in the background, so no request waits for it unless the process asked for
   * none for ESTIMATE_MAX_AGE_MS.
   */
  const estimates = new RefreshingValue(readServiceEstimate, { freshMs: ESTIMATE_CACHE_MS, maxAgeMs: ESTIMATE_MAX_AGE_MS });
  const serviceEstimate = (): Promise<ServiceEstimate> => estimates.get();

  /**
   * Each user's queued jobs in the pool by lane (how many, their weight, since when) and each tier's total; one grouped
   * read, with the snapshot it was read in (its one row stands for an empty pool).
   */
  async function readSummary(): Promise<{ value: PoolSummary; snapshot: Snapshot }> {
    const rows = await sql<{ snapshot: string; user_id: string | null; tier: string; lane: Priority; weight: number; queued: number; oldest_ms: number }[]>`
      select pg_current_snapshot()::text as snapshot, q.*
      from (select 1) as one
      left join lateral (
        select e.user_id, e.tier, coalesce(g.params->>'priority', 'interactive') as lane, max(e.fairness_weight)::float8 as weight, count(*)::int as queued,
               (extract(epoch from min(g.created_at)) * 1000)::float8 as oldest_ms
        from generations g join gpu_queue_entries e on e.job_id = g.id
        where g.status_rank = 0 and e.pool = ${pool}
        group by e.user_id, e.tier, lane
      ) as q on true`;
    const value = emptySummary();
    for (const row of rows) {
      if (row.user_id !== null) addQueued(value, laneOf(row.lane), row.user_id, row.tier, { weight: row.weight, queued: row.queued, oldestAt: row.oldest_ms });
    }
    return { value, snapshot: parseSnapshot(rows[0].snapshot) };
  }

  const newestEventId = async () => {
    const [row] = await sql<{ id: string | null }[]>`select max(id) as id from generation_events`;
    return Number(row?.id ?? 0);
  };

  /** The pool summary, read again only after the change feed moved (pool-summary-cache.ts has the rules). */
  const summaries = new PoolSummaryCache<PoolSummary>({ newestEventId, read: readSummary });
  const poolSummary = async (mode: 'recent' | 'cached' | 'fresh') => (await summaries.get(mode)).value;

  /**
   * Jobs of the tier waiting for a GPU in this pool, by the summary in hand (with what this process admitted since).
   * `fresh` reads the summary now; admission does so before refusing, so a stale summary never refuses a job there is
   * room for.
   */
  async function tierBacklog(tier: string, { fresh = false, priority = 'interactive' }: { fresh?: boolean; priority?: Priority } = {}): Promise<number> {
    return (await poolSummary(fresh ? 'fresh' : 'cached'))[priority].byTier.get(tier) ?? 0;
  }

  /**
   * This process admitted jobs in transaction `xid`: they count in their tier's backlog and their user's queue at once,
   * so what one API instance admits is never missing from its own summary, nor counted twice (another instance's
   * admits, and jobs leaving the queue, show at the next read).
   */
  function noteAdmitted({
    xid,
    userId,
    tier,
    weight,
    createdAt,
    jobs = 1,
    priority = 'interactive',
  }: {
    xid: bigint;
    userId: string;
    tier: string;
    weight: number;
    createdAt: Date;
    jobs?: number;
    priority?: Priority;
  }): void {
    summaries.noteCommitted(xid, (summary) => addQueued(summary, priority, userId, tier, { weight, queued: jobs, oldestAt: createdAt.getTime() }));
  }

  /**
   * Position and ETA of the user's queued jobs in this pool: of the given one, or of all of them. The user's own jobs
   * are read now (an index range of the user's queued rows); the other users' queues come from the summary in hand (at
   * most a second old, with what this process admitted since): a read waits for a read of the whole backlog only when
   * the process has not read it for a second.
   */
  async function positions(userId: string, only?: { id: string }): Promise<Map<string, QueueInfo>> {
    const [mine, byUser, estimate] = await Promise.all([
      // Per lane: a job waits only behind the user's earlier jobs of its own lane.
      sql<{ id: string; lane: Priority; ahead: number; queued: number; weight: number; oldest_ms: number }[]>`
        select g.id, l.lane, (row_number() over w_order - 1)::int as ahead, (count(*) over w_lane)::int as queued,
               (max(e.fairness_weight) over w_lane)::float8 as weight, (extract(epoch from min(g.created_at) over w_lane) * 1000)::float8 as oldest_ms
        from generations g
        -- The user's queued rows (generations_user_active_idx), then each one's entry by key (LIMIT keeps it a lookup
        -- per row: a plain join was planned as a scan of the whole pool's entries).
        cross join lateral (
          select q.fairness_weight from gpu_queue_entries q where q.job_id = g.id and q.pool = ${pool} limit 1
        ) as e
        -- Its lane (params.priority is written only for the batch lane).
        cross join lateral (select coalesce(g.params->>'priority', 'interactive') as lane) as l
        where g.user_id = ${userId} and g.status_rank = 0
        window w_lane as (partition by l.lane), w_order as (partition by l.lane order by g.created_at, g.id)`,
      poolSummary('recent'),
      serviceEstimate(),
    ]);
    const result = new Map<string, QueueInfo>();
    for (const { id, lane, ahead: k, weight, queued, oldest_ms } of mine) {
      if (!only || id === only.id) result.set(id, place(userId, laneOf(lane), k, { weight, queued, oldestAt: oldest_ms }, byUser, estimate));
    }
    return result;
  }

  /**
   * The place of a job admitted just now, from what admission read under the user's lock: `queuedBefore` of the user's
   * jobs wait ahead of it, the oldest since `oldestAt` (ms). No query of its own.
   */
  async function positionOfNew(
    userId: string,
    { weight, queuedBefore, oldestAt, priority = 'interactive' }: { weight: number; queuedBefore: number; oldestAt: number; priority?: Priority },
  ): Promise<QueueInfo> {
    const [byUser, estimate] = await Promise.all([poolSummary('cached'), serviceEstimate()]);
    return place(userId, priority, queuedBefore, { weight, queued: queuedBefore + 1, oldestAt }, byUser, estimate);
  }

  /**
   * A job's place in its lane, under fair dispatch among the lane's users. An interactive job counts no batch job: the
   * batch lane waits while any interactive job does. A batch job has every waiting interactive job ahead of it too (one
   * submitted later will pass it as well: the position is where it stands now).
   */
  function place(userId: string, priority: Priority, k: number, self: UserQueue, summary: PoolSummary, estimate: ServiceEstimate): QueueInfo {
    const lane = summary[priority];
    const others = [...lane.users].filter(([id]) => id !== userId).map(([, queue]) => queue);
    const above = priority === 'batch' ? summary.interactive.queued : 0;
    const position = above + jobsAhead(k, self, others) + 1;
    return { position, etaSeconds: etaSeconds(position, estimate) };
  }

  return { pool, serviceEstimate, positions, positionOfNew, tierBacklog, noteAdmitted };
}
