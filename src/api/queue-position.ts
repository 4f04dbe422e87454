import type { Config } from '../config';
import type { Sql } from '../db/client';
import { readCapacity } from '../dispatch/capacity';

/**
 * Queue position and ETA of queued jobs, computed when read. Temporal's fairness serves backlogged users in proportion to
 * their weights, so the jobs ahead of a user's k-th queued job are the user's own k earlier ones plus, from every other
 * user, about as many as that user is served while this one is served k+1 times (ties go to the user waiting longest,
 * as Temporal breaks them by task age). The ETA divides the position by the pool's service rate: live capacity over the
 * mean GPU time of recent completions.
 */
export interface QueueInfo {
  /** 1 is next to get a GPU. */
  position: number;
  /** null until recent completions give a service rate. */
  etaSeconds: number | null;
}

export interface ServiceEstimate {
  capacity: number;
  /** Mean GPU time of jobs completed within the window; null when none was. */
  meanRunSeconds: number | null;
  completed: number;
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

export type QueuePositions = ReturnType<typeof createQueuePositions>;

export function createQueuePositions({ sql, config }: { sql: Sql; config: Config }) {
  const { pool, initialCapacity } = config.dispatch;
  const windowMs = config.admission.etaWindowMs;
  let cached: { at: number; value: ServiceEstimate } | undefined;

  /** The pool's live capacity and recent GPU time; cached a second so listing many jobs costs two queries. */
  async function serviceEstimate(): Promise<ServiceEstimate> {
    if (cached && Date.now() - cached.at < ESTIMATE_CACHE_MS) return cached.value;
    const [capacity, [recent]] = await Promise.all([
      readCapacity(sql, pool),
      // Jobs end within a day of admission (queue and run deadlines), which bounds the index range.
      sql<{ completed: number; mean_run_s: number | null }[]>`
        select count(*)::int as completed, avg(extract(epoch from g.completed_at - g.started_at))::float8 as mean_run_s
        from gpu_queue_entries e join generations g on g.id = e.job_id
        where e.pool = ${pool} and e.admitted_at > now() - interval '1 day'
          and g.completed_at > now() - ${windowMs}::int * interval '1 millisecond' and g.started_at is not null`,
    ]);
    const value = { capacity: capacity?.capacity ?? initialCapacity, meanRunSeconds: recent.mean_run_s, completed: recent.completed };
    cached = { at: Date.now(), value };
    return value;
  }

  /** Each user's queued jobs in the pool: how many, their weight, and since when. */
  const queuesByUser = () => sql<{ user_id: string; weight: number; queued: number; oldest_ms: number }[]>`
    select e.user_id, max(e.fairness_weight)::float8 as weight, count(*)::int as queued,
           (extract(epoch from min(g.created_at)) * 1000)::float8 as oldest_ms
    from generations g join gpu_queue_entries e on e.job_id = g.id
    where g.status_rank = 0 and e.pool = ${pool}
    group by e.user_id`;

  /**
   * Position and ETA of the user's queued jobs in this pool: of the given one (a count of the user's jobs before it), or
   * of all of them (one ordered list).
   */
  async function positions(userId: string, only?: { id: string; createdAt: Date }): Promise<Map<string, QueueInfo>> {
    const [byUser, mine, estimate] = await Promise.all([
      queuesByUser(),
      only
        ? sql<{ id: string; ahead: number }[]>`
            select ${only.id} as id, count(*)::int as ahead
            from generations g join gpu_queue_entries e on e.job_id = g.id
            where g.user_id = ${userId} and g.status_rank = 0 and e.pool = ${pool}
              and (g.created_at, g.id) < (${only.createdAt.toISOString()}::timestamptz, ${only.id})`
        : sql<{ id: string; ahead: number }[]>`
            select g.id, (row_number() over (order by g.created_at, g.id) - 1)::int as ahead
            from generations g join gpu_queue_entries e on e.job_id = g.id
            where g.user_id = ${userId} and g.status_rank = 0 and e.pool = ${pool}`,
      serviceEstimate(),
    ]);
    const toQueue = (u: (typeof byUser)[number]): UserQueue => ({ weight: u.weight, queued: u.queued, oldestAt: u.oldest_ms });
    const self = byUser.find((u) => u.user_id === userId);
    if (!self) return new Map();
    const others = byUser.filter((u) => u !== self).map(toQueue);
    const result = new Map<string, QueueInfo>();
    mine.forEach(({ id, ahead: k }) => {
      const position = jobsAhead(k, toQueue(self), others) + 1;
      result.set(id, { position, etaSeconds: etaSeconds(position, estimate) });
    });
    return result;
  }

  return { pool, serviceEstimate, positions };
}
