-- GPU slot leases (docs/decisions.md, "GPU slots are Postgres leases behind a custom slot supplier"): taking a slot of a
-- pool and putting a job on one, each one call from the dispatcher (src/dispatch/slot-leases.ts) instead of a
-- transaction's begin, lock, insert and commit. The tables are drizzle/0004's. A pool's live capacity is
-- src/dispatch/capacity.ts's EFFECTIVE_CAPACITY, spelt again here. Applied by the migrate step whenever this file changes
-- (src/db/routines.ts): every statement here must be safe to run again.
--
-- Both lock the pool's capacity row before they count, in a statement of their own: under READ COMMITTED each statement
-- of a function takes a snapshot of its own, so the count after the lock sees every lease committed before it, and two
-- dispatchers can never both take the last slot. (One INSERT … WHERE count < capacity would not do: its snapshot would
-- predate the lock wait.)

-- Takes one slot of the pool for the dispatcher, as lease `p_lease_id` for `p_ttl_ms`, if fewer live leases than the
-- pool's capacity exist; true when it did. Expired leases (a dispatcher that died) are deleted on the way. Most calls find
-- the pool full (every release, recheck and capacity change makes each waiting dispatcher ask): a plain read answers
-- those without the lock; only a pool that looked open takes it, and the count under it decides. A pool without a row
-- grants nothing.
CREATE OR REPLACE FUNCTION vg_acquire_slot_lease(p_pool text, p_dispatcher_id text, p_lease_id text, p_ttl_ms int)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  v_capacity int;
BEGIN
  IF NOT coalesce((
    SELECT (SELECT count(*) FROM gpu_slot_leases l WHERE l.pool = p_pool AND l.expires_at > now())
      < coalesce(least(c.admin_capacity, c.backend_capacity), c.default_capacity)
    FROM gpu_capacity c WHERE c.pool = p_pool
  ), false) THEN
    RETURN false;
  END IF;
  SELECT coalesce(least(c.admin_capacity, c.backend_capacity), c.default_capacity) INTO v_capacity
  FROM gpu_capacity c WHERE c.pool = p_pool FOR UPDATE;
  IF NOT FOUND THEN
    RETURN false;
  END IF;
  WITH reclaimed AS (DELETE FROM gpu_slot_leases l WHERE l.pool = p_pool AND l.expires_at <= now())
  INSERT INTO gpu_slot_leases (id, pool, dispatcher_id, expires_at)
  SELECT p_lease_id, p_pool, p_dispatcher_id, now() + p_ttl_ms * interval '1 millisecond'
  WHERE (SELECT count(*) FROM gpu_slot_leases l WHERE l.pool = p_pool AND l.expires_at > now()) < v_capacity;
  RETURN FOUND;
END
$$;

-- Puts job `p_job_id` on the dispatcher's lease `p_lease_id`, if fewer jobs than the capacity run in the pool; true when
-- it did. This is the check that holds when capacity falls while a slot was already reserved. `p_force` claims
-- regardless: the backend job already exists (a retried attempt resuming it) and must be counted. A job holds one slot:
-- a lease it still had from a dispatcher that died is handed over here (deleted in the same statement, so the count
-- leaves the job's own leases out). An upsert, so a lease lost to expiry comes back. A pool without a row has capacity 0.
CREATE OR REPLACE FUNCTION vg_claim_slot_lease(
  p_pool text, p_dispatcher_id text, p_lease_id text, p_ttl_ms int, p_job_id text, p_force boolean
)
RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
  v_capacity int;
BEGIN
  SELECT coalesce(least(c.admin_capacity, c.backend_capacity), c.default_capacity) INTO v_capacity
  FROM gpu_capacity c WHERE c.pool = p_pool FOR UPDATE;
  v_capacity := coalesce(v_capacity, 0);
  WITH handed_over AS (DELETE FROM gpu_slot_leases l WHERE l.pool = p_pool AND l.job_id = p_job_id AND l.id <> p_lease_id)
  INSERT INTO gpu_slot_leases AS t (id, pool, dispatcher_id, job_id, claimed_at, expires_at)
  SELECT p_lease_id, p_pool, p_dispatcher_id, p_job_id, now(), now() + p_ttl_ms * interval '1 millisecond'
  WHERE p_force OR (
    SELECT count(*) FROM gpu_slot_leases l
    WHERE l.pool = p_pool AND l.job_id IS NOT NULL AND l.job_id <> p_job_id AND l.expires_at > now() AND l.id <> p_lease_id
  ) < v_capacity
  ON CONFLICT (id) DO UPDATE SET job_id = excluded.job_id, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at;
  RETURN FOUND;
END
$$;
