import type { Sql } from '../db/client';
import type { Logger } from '../lib/logger';
import { everyInTurn } from '../lib/periodic';
import type { BackendState } from './backend-health';

/**
 * Queued jobs leave a paused or down backend (docs/decisions.md, "Queued jobs leave a paused or down backend"). A task
 * waiting in a backend's `gpu` queue is never polled while that backend's pool is 0, so nothing on the dispatch side can
 * take it out; its workflow can. Each routed attempt records where it waits (recordQueuedRoute); every GPU dispatcher
 * looks, every few seconds and only while some backend is paused or down, for attempts waiting there that another
 * backend that is up could render, claims a batch of them (oldest first, so each user's jobs keep their order) and asks
 * each one's workflow to route it anew (the `rerouteQueued` signal).
 */

/** What routing recorded of an attempt as it sent it to a backend's queue. */
export interface QueuedRoute {
  jobId: string;
  attempt: number;
  backend: string;
  /** The other backends that can render the job, in rank order. */
  alternatives: string[];
}

/** Records where attempt N waits; a new route overwrites the last one and forgets any earlier ask. */
export async function recordQueuedRoute(sql: Sql, { jobId, attempt, backend, alternatives }: QueuedRoute): Promise<void> {
  await sql`
    update generations set queued_on = ${backend}, queued_attempt = ${attempt}, queued_alternatives = ${alternatives}::text[], reroute_asked_at = null
    where id = ${jobId}`;
}

/** A waiting attempt to move: its job, the run it belongs to, and the backend it leaves. */
export interface RerouteCandidate {
  jobId: string;
  /** The run's tag (runTag: its opening, epoch ms), as the workflow checks it. */
  run: string;
  attempt: number;
  from: string;
}

/** Jobs asked per pass, per dispatcher. */
export const REROUTE_BATCH = 200;
/** An ask not acted on (the signal failed, or the workflow found its route changed) is repeated after this long. */
export const REROUTE_ASK_AGAIN_MS = 30_000;
/** Asks sent at once, in order. */
const ASKS_AT_ONCE = 10;

/** Backends that hold jobs nobody serves now (down, or a pool of 0), and backends that could take them (up, pool above 0). */
export function stuckAndUsable(states: ReadonlyMap<string, Pick<BackendState, 'down' | 'capacity'>>): { stuck: string[]; usable: string[] } {
  const stuck: string[] = [];
  const usable: string[] = [];
  for (const [name, s] of states) (s.down || s.capacity <= 0 ? stuck : usable).push(name);
  return { stuck, usable };
}

/**
 * Claims up to `limit` attempts waiting on a stuck backend that a usable one can render, not asked in the last
 * REROUTE_ASK_AGAIN_MS, oldest job first; two dispatchers never claim the same one. Reads the active rows only (the
 * partial index of unfinished jobs), and runs only while some backend is stuck.
 */
export async function claimReroutes(sql: Sql, { stuck, usable, limit = REROUTE_BATCH }: { stuck: string[]; usable: string[]; limit?: number }): Promise<RerouteCandidate[]> {
  const rows = await sql<{ id: string; run_ms: number; queued_attempt: number; queued_on: string; created_ms: number }[]>`
    update generations g set reroute_asked_at = now()
    from (
      select id from generations
      where status_rank < 2 and queued_on = any(${stuck}::text[]) and queued_attempt > attempt and run_opened_at is not null
        and queued_alternatives && ${usable}::text[]
        and (reroute_asked_at is null or reroute_asked_at < now() - ${REROUTE_ASK_AGAIN_MS}::int * interval '1 millisecond')
      order by created_at, id
      limit ${limit}
      for update skip locked
    ) due
    where g.id = due.id
    returning g.id, round(extract(epoch from g.run_opened_at) * 1000)::float8 as run_ms, g.queued_attempt, g.queued_on,
      (extract(epoch from g.created_at) * 1000)::float8 as created_ms`;
  return rows
    .sort((a, b) => a.created_ms - b.created_ms || a.id.localeCompare(b.id))
    .map((r) => ({ jobId: r.id, run: String(r.run_ms), attempt: r.queued_attempt, from: r.queued_on }));
}

/**
 * Every `everyMs`: reads the backends' state, and when one is stuck and another usable, claims a batch of attempts to
 * move and asks each one's workflow (`ask`, which signals it), ten at a time in the order claimed.
 */
export function startQueuedReroutes({
  sql,
  states,
  ask,
  everyMs,
  logger,
}: {
  sql: Sql;
  states: () => Promise<ReadonlyMap<string, Pick<BackendState, 'down' | 'capacity'>>>;
  ask: (candidate: RerouteCandidate) => Promise<void>;
  everyMs: number;
  logger: Logger;
}) {
  return everyInTurn(
    everyMs,
    async () => {
      const { stuck, usable } = stuckAndUsable(await states());
      if (stuck.length === 0 || usable.length === 0) return;
      const due = await claimReroutes(sql, { stuck, usable });
      for (let i = 0; i < due.length; i += ASKS_AT_ONCE) {
        await Promise.all(
          due.slice(i, i + ASKS_AT_ONCE).map((candidate) =>
            ask(candidate).catch((err: unknown) => logger.warn({ err, jobId: candidate.jobId, backend: candidate.from }, 'could not ask a queued job to leave its backend; asking again later')),
          ),
        );
      }
      if (due.length > 0) logger.info({ jobs: due.length, from: [...new Set(due.map((c) => c.from))] }, 'asked queued jobs to leave a paused or down backend');
    },
    { onError: (err) => logger.warn({ err }, 'could not look for queued jobs to move off a paused or down backend') },
  );
}
