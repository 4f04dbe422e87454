import type { Sql } from '../db/client';
import { backlog, gpuCapacity, gpuSlotsInUse, inFlight, stuckJobs } from '../lib/metrics';

/**
 * Refreshes the gauges that describe shared state (the projection and the GPU pool) just before a scrape. Three small
 * aggregate queries: active rows are few and indexed (generations_active_idx).
 */
export async function refreshSharedGauges(sql: Sql, tiers: string[]): Promise<void> {
  const byTier = await sql<{ tier: string; queued: number; running: number }[]>`
    select tier, count(*) filter (where status = 'queued')::int as queued, count(*) filter (where status = 'running')::int as running
    from generations where status_rank < 2 group by tier`;
  for (const tier of new Set([...tiers, ...byTier.map((r) => r.tier)])) {
    const row = byTier.find((r) => r.tier === tier);
    backlog.set({ tier }, row?.queued ?? 0);
    inFlight.set({ tier }, row?.running ?? 0);
  }
  const [stuck] = await sql<{ n: number }[]>`
    select count(*)::int as n from generations where status = 'running' and expected_done_at < now()`;
  stuckJobs.set(stuck.n);
  const [pool] = await sql<{ capacity: number | null; leased: number }[]>`
    select (select sum(coalesce(least(admin_capacity, backend_capacity), default_capacity))::int from gpu_capacity) as capacity,
           (select count(*)::int from gpu_slot_leases where expires_at > now() and job_id is not null) as leased`;
  gpuCapacity.set(pool.capacity ?? 0);
  gpuSlotsInUse.set(pool.leased);
}
