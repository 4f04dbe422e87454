-- A user's job counts (docs/decisions.md, "A user's job counts are kept by triggers"): the trigger function, its two
-- triggers on generations, and the read admission and GET /v1/usage share. The table and its first fill are
-- drizzle/0013's; the batch lane's columns drizzle/0021's. Applied by the migrate step whenever this file changes (src/db/routines.ts): every statement here
-- must be safe to run again.

-- Kept from every insert, delete and change of status_rank of a generation, whoever writes it (the API's admission,
-- the workflow's projection writes, an undone submit, an operator's SQL), so the counts cannot drift from the rows. A row
-- inserted with triggers disabled (session_replication_role = replica) is not counted.
CREATE OR REPLACE FUNCTION count_user_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  -- The row is a batch job (params.priority, written only for the batch lane): its counts go to the batch_ columns too.
  v_batch boolean;
BEGIN
  IF TG_OP = 'INSERT' THEN
    v_batch := coalesce(NEW.params->>'priority' = 'batch', false);
    INSERT INTO user_job_counts AS c (user_id, active, queued, day, today, batch_active, batch_queued)
    VALUES (
      NEW.user_id, (NEW.status_rank < 2)::int, (NEW.status_rank = 0)::int, (NEW.created_at AT TIME ZONE 'UTC')::date, 1,
      (v_batch AND NEW.status_rank < 2)::int, (v_batch AND NEW.status_rank = 0)::int
    )
    ON CONFLICT (user_id) DO UPDATE SET
      active = c.active + excluded.active,
      queued = c.queued + excluded.queued,
      batch_active = c.batch_active + excluded.batch_active,
      batch_queued = c.batch_queued + excluded.batch_queued,
      -- A job of a later day starts that day's count; one of an earlier day (a backfill) changes none.
      today = CASE WHEN excluded.day = c.day THEN c.today + 1 WHEN excluded.day > c.day THEN 1 ELSE c.today END,
      day = greatest(c.day, excluded.day);
  ELSIF TG_OP = 'DELETE' THEN
    -- A finished job of an earlier UTC day (what retention pruning deletes) was neither active nor queued, and `today`
    -- is read only while `day` is the current day: deleting it changes no count a reader uses, so pruning never locks
    -- a user's counts row, which every submit of that user updates.
    IF OLD.status_rank >= 2 AND (OLD.created_at AT TIME ZONE 'UTC')::date < (now() AT TIME ZONE 'UTC')::date THEN
      RETURN NULL;
    END IF;
    v_batch := coalesce(OLD.params->>'priority' = 'batch', false);
    UPDATE user_job_counts AS c SET
      active = c.active - (OLD.status_rank < 2)::int,
      queued = c.queued - (OLD.status_rank = 0)::int,
      batch_active = c.batch_active - (v_batch AND OLD.status_rank < 2)::int,
      batch_queued = c.batch_queued - (v_batch AND OLD.status_rank = 0)::int,
      today = c.today - (c.day = (OLD.created_at AT TIME ZONE 'UTC')::date)::int
    WHERE c.user_id = OLD.user_id;
  ELSE
    -- A job's lane is part of its request (params), which no write after the queued row's changes.
    v_batch := coalesce(NEW.params->>'priority' = 'batch', false);
    UPDATE user_job_counts AS c SET
      active = c.active + (NEW.status_rank < 2)::int - (OLD.status_rank < 2)::int,
      queued = c.queued + (NEW.status_rank = 0)::int - (OLD.status_rank = 0)::int,
      batch_active = c.batch_active + (v_batch AND NEW.status_rank < 2)::int - (v_batch AND OLD.status_rank < 2)::int,
      batch_queued = c.batch_queued + (v_batch AND NEW.status_rank = 0)::int - (v_batch AND OLD.status_rank = 0)::int
    WHERE c.user_id = NEW.user_id;
  END IF;
  RETURN NULL;
END
$$;

-- Named after generations_change_feed so they fire after it (triggers fire in name order): a user's counts row is
-- locked after the feed's per-user lock, in that order on every path.
CREATE OR REPLACE TRIGGER generations_counts AFTER INSERT OR DELETE ON generations
FOR EACH ROW EXECUTE FUNCTION count_user_jobs();

CREATE OR REPLACE TRIGGER generations_counts_rank AFTER UPDATE OF status_rank ON generations
FOR EACH ROW WHEN (OLD.status_rank IS DISTINCT FROM NEW.status_rank) EXECUTE FUNCTION count_user_jobs();

-- A user's active jobs (queued or running) and jobs created today (UTC), read from the counts: O(1) however many jobs
-- the user has. GET /v1/usage and a rate-limited submit's answer read it; admission reads the row itself.
CREATE OR REPLACE FUNCTION vg_user_job_counts(p_user_id text)
RETURNS TABLE (active int, today int)
LANGUAGE sql STABLE AS $$
  SELECT coalesce(max(c.active), 0), coalesce(max(CASE WHEN c.day = (now() AT TIME ZONE 'UTC')::date THEN c.today END), 0)
  FROM user_job_counts c WHERE c.user_id = p_user_id
$$;
