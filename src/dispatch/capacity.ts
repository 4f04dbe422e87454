import type { Sql } from '../db/client';

/**
 * A GPU pool's live capacity (table gpu_capacity): the smaller of what the operator set and what the backend reported,
 * else the configured starting number. Every change is announced on GPU_SLOTS_CHANNEL so waiting dispatchers look again.
 */
export const GPU_SLOTS_CHANNEL = 'gpu_slots';

/** The live number, as SQL over a gpu_capacity row; LEAST ignores NULLs, so an unset source does not count. (Spelt again in drizzle/routines/slot_leases.sql.) */
export const EFFECTIVE_CAPACITY = 'coalesce(least(admin_capacity, backend_capacity), default_capacity)';

export interface PoolCapacity {
  pool: string;
  capacity: number;
  defaultCapacity: number;
  adminCapacity: number | null;
  backendCapacity: number | null;
  updatedAt: Date;
}

interface CapacityRow {
  pool: string;
  capacity: number;
  default_capacity: number;
  admin_capacity: number | null;
  backend_capacity: number | null;
  /** A string: drizzle leaves timestamps unparsed on the postgres.js client it shares. */
  updated_at: string | Date;
}

const toPoolCapacity = (r: CapacityRow): PoolCapacity => ({
  pool: r.pool,
  capacity: r.capacity,
  defaultCapacity: r.default_capacity,
  adminCapacity: r.admin_capacity,
  backendCapacity: r.backend_capacity,
  updatedAt: new Date(r.updated_at),
});

/** Creates the pool's row, or updates its starting number (a dispatcher starting with another GPU_SLOTS). */
export async function ensurePool(sql: Sql, pool: string, defaultCapacity: number): Promise<PoolCapacity> {
  const [row] = await sql<CapacityRow[]>`
    with saved as (
      insert into gpu_capacity (pool, default_capacity) values (${pool}, ${defaultCapacity})
      on conflict (pool) do update set default_capacity = excluded.default_capacity, updated_at = now()
      returning *
    )
    select *, ${sql.unsafe(EFFECTIVE_CAPACITY)} as capacity, pg_notify(${GPU_SLOTS_CHANNEL}, pool) from saved`;
  return toPoolCapacity(row);
}

export async function readCapacity(sql: Sql, pool: string): Promise<PoolCapacity | undefined> {
  const [row] = await sql<CapacityRow[]>`select *, ${sql.unsafe(EFFECTIVE_CAPACITY)} as capacity from gpu_capacity where pool = ${pool}`;
  return row && toPoolCapacity(row);
}

/** PUT /admin/capacity: the operator's number (null clears it). */
export async function setAdminCapacity(sql: Sql, pool: string, adminCapacity: number | null, defaultCapacity: number): Promise<PoolCapacity> {
  const [row] = await sql<CapacityRow[]>`
    with saved as (
      insert into gpu_capacity (pool, default_capacity, admin_capacity) values (${pool}, ${defaultCapacity}, ${adminCapacity})
      on conflict (pool) do update set admin_capacity = excluded.admin_capacity, updated_at = now()
      returning *
    )
    select *, ${sql.unsafe(EFFECTIVE_CAPACITY)} as capacity, pg_notify(${GPU_SLOTS_CHANNEL}, pool) from saved`;
  return toPoolCapacity(row);
}

/** The backend's own number; written (and announced) only when it changed. Returns true when it did. */
export async function reportBackendCapacity(sql: Sql, pool: string, backendCapacity: number): Promise<boolean> {
  const rows = await sql`
    update gpu_capacity set backend_capacity = ${backendCapacity}, updated_at = now()
    where pool = ${pool} and backend_capacity is distinct from ${backendCapacity}
    returning pg_notify(${GPU_SLOTS_CHANNEL}, pool)`;
  return rows.length > 0;
}

export interface SlotUse {
  /** Leases held (slots reserved by dispatchers, running a job or about to). */
  leased: number;
  /** Leases carrying a job: backend jobs in flight. */
  running: number;
}

export async function readSlotUse(sql: Sql, pool: string): Promise<SlotUse> {
  const [row] = await sql<SlotUse[]>`
    select count(*)::int as leased, count(job_id)::int as running
    from gpu_slot_leases where pool = ${pool} and expires_at > now()`;
  return row;
}

/**
 * The service's live capacity across every backend's pool (routing across several): the sum of each pool's live number
 * (its starting one when it has no row yet). With one backend it is that pool's.
 */
export async function readTotalCapacity(sql: Sql, pools: Array<{ pool: string; initialCapacity: number }>): Promise<number> {
  const rows = await sql<{ pool: string; capacity: number }[]>`
    select pool, ${sql.unsafe(EFFECTIVE_CAPACITY)} as capacity from gpu_capacity where pool = any(${pools.map((p) => p.pool)})`;
  const live = new Map(rows.map((r) => [r.pool, r.capacity]));
  return pools.reduce((sum, p) => sum + (live.get(p.pool) ?? p.initialCapacity), 0);
}
