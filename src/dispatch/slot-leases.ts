import type { Sql } from '../db/client';
import type { Priority } from '../domain/generation';
import { GPU_SLOTS_CHANNEL } from './capacity';

/**
 * The SQL of GPU slot leases (table gpu_slot_leases), written once. Acquisition and claims are SQL routines
 * (drizzle/routines/slot_leases.sql), one round trip each: they lock the pool's capacity row first, in a statement of
 * their own, so the count that follows sees every lease committed before it, and two dispatchers can never both take
 * the last slot.
 */

export interface LeaseRef {
  pool: string;
  dispatcherId: string;
  leaseId: string;
  ttlMs: number;
}

/**
 * acquireSlotLease: takes one slot of the pool if fewer live leases than its capacity exist. Expired leases (a
 * dispatcher that died) are deleted on the way, so they cannot hold slots for longer than their TTL. Most calls find the
 * pool full (every release, recheck and capacity change makes each waiting dispatcher ask): the routine answers those
 * with a plain read, without the lock; only a pool that looked open takes the locked path, which decides.
 */
export async function acquireSlotLease(sql: Sql, { pool, dispatcherId, leaseId, ttlMs }: LeaseRef): Promise<boolean> {
  const [row] = await sql<{ acquired: boolean }[]>`select vg_acquire_slot_lease(${pool}, ${dispatcherId}, ${leaseId}, ${ttlMs}::int) as acquired`;
  return row.acquired;
}

/**
 * claimSlotLease: puts a job on one of the dispatcher's leases, if fewer jobs than the capacity run in the pool. This is
 * the check that holds when capacity falls while a slot was already reserved. `force` claims regardless: the backend job
 * already exists (a retried attempt resuming it) and must be counted. A job holds one slot: a lease it still had from a
 * dispatcher that died is handed over (deleted in the same statement, so the count leaves the job's own leases out).
 * An upsert, so a lease lost to expiry comes back.
 */
export async function claimSlotLease(sql: Sql, lease: LeaseRef, jobId: string, force: boolean): Promise<boolean> {
  const { pool, dispatcherId, leaseId, ttlMs } = lease;
  const [row] = await sql<{ claimed: boolean }[]>`
    select vg_claim_slot_lease(${pool}, ${dispatcherId}, ${leaseId}, ${ttlMs}::int, ${jobId}, ${force}::boolean) as claimed`;
  return row.claimed;
}

/**
 * unclaimSlotLease: the job left the slot; the lease stays with its dispatcher until the slot is released (which tells
 * the waiting dispatchers). Nobody waits for an unclaim: acquisitions count leases, not jobs, and a claim refused is
 * handed back to Temporal rather than waiting.
 */
export async function unclaimSlotLease(sql: Sql, leaseId: string): Promise<void> {
  await sql`update gpu_slot_leases set job_id = null, claimed_at = null where id = ${leaseId}`;
}

/** releaseSlotLease: gives the slot back to the pool and tells every dispatcher waiting for one. */
export async function releaseSlotLease(sql: Sql, leaseId: string): Promise<void> {
  await sql`
    with gone as (delete from gpu_slot_leases where id = ${leaseId} returning pool)
    select pg_notify(${GPU_SLOTS_CHANNEL}, pool) from gone`;
}

/** renewSlotLeases: the holder's heartbeat; returns the ids still held (a missing one was lost to expiry). */
export async function renewSlotLeases(sql: Sql, dispatcherId: string, ttlMs: number): Promise<Set<string>> {
  const rows = await sql<{ id: string }[]>`
    update gpu_slot_leases set expires_at = now() + ${ttlMs}::int * interval '1 millisecond'
    where dispatcher_id = ${dispatcherId} returning id`;
  return new Set(rows.map((r) => r.id));
}

/** releaseDispatcherLeases: a dispatcher stopping gives back whatever it still holds. */
export async function releaseDispatcherLeases(sql: Sql, dispatcherId: string): Promise<number> {
  const rows = await sql`
    with gone as (delete from gpu_slot_leases where dispatcher_id = ${dispatcherId} returning pool)
    select pg_notify(${GPU_SLOTS_CHANNEL}, pool) from gone`;
  return rows.length;
}

/**
 * userServedSince: whether another job of the user has been given a GPU since `since` (it holds a claimed lease of the
 * pool now, or the backend accepted it after that instant). A job raised to its lane's first-job level was its user's only
 * active one in the lane when admitted at `since`; once another job of the user got a slot first, the raise is spent (claim-interceptor.ts).
 * Jobs admitted after it may carry an earlier created_at (taken before they queued for the user's admission lock), so the
 * user's rows are read from a few minutes earlier.
 */
export async function userServedSince(
  sql: Sql,
  { pool, jobId, userId, since, priority = 'interactive' }: { pool: string; jobId: string; userId: string; since: Date; priority?: Priority },
): Promise<boolean> {
  // Only the job's own lane counts: a raise is the user's first job in that lane (their other lane runs apart).
  const [row] = await sql<{ served: boolean }[]>`
    select exists (
      select 1 from generations g
      where g.user_id = ${userId} and g.created_at >= ${since.toISOString()}::timestamptz - interval '5 minutes' and g.id <> ${jobId}
        and coalesce(g.params->>'priority', 'interactive') = ${priority}
        and (g.started_at >= ${since.toISOString()}::timestamptz or exists (select 1 from gpu_slot_leases l where l.job_id = g.id and l.pool = ${pool}))
    ) as served`;
  return row.served;
}
