-- count_user_jobs of drizzle/0013, unchanged for inserts and status changes. Deleting a finished job of an earlier UTC
-- day (what retention pruning deletes) changes none of the counts a reader uses: it was neither active nor queued, and
-- `today` is read only while `day` is the current day. So such a delete returns at once, and pruning never locks a
-- user's counts row, which every submit of that user updates.
CREATE OR REPLACE FUNCTION count_user_jobs() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO user_job_counts AS c (user_id, active, queued, day, today)
    VALUES (NEW.user_id, (NEW.status_rank < 2)::int, (NEW.status_rank = 0)::int, (NEW.created_at AT TIME ZONE 'UTC')::date, 1)
    ON CONFLICT (user_id) DO UPDATE SET
      active = c.active + excluded.active,
      queued = c.queued + excluded.queued,
      -- A job of a later day starts that day's count; one of an earlier day (a backfill) changes none.
      today = CASE WHEN excluded.day = c.day THEN c.today + 1 WHEN excluded.day > c.day THEN 1 ELSE c.today END,
      day = greatest(c.day, excluded.day);
  ELSIF TG_OP = 'DELETE' THEN
    IF OLD.status_rank >= 2 AND (OLD.created_at AT TIME ZONE 'UTC')::date < (now() AT TIME ZONE 'UTC')::date THEN
      RETURN NULL;
    END IF;
    UPDATE user_job_counts AS c SET
      active = c.active - (OLD.status_rank < 2)::int,
      queued = c.queued - (OLD.status_rank = 0)::int,
      today = c.today - (c.day = (OLD.created_at AT TIME ZONE 'UTC')::date)::int
    WHERE c.user_id = OLD.user_id;
  ELSE
    UPDATE user_job_counts AS c SET
      active = c.active + (NEW.status_rank < 2)::int - (OLD.status_rank < 2)::int,
      queued = c.queued + (NEW.status_rank = 0)::int - (OLD.status_rank = 0)::int
    WHERE c.user_id = NEW.user_id;
  END IF;
  RETURN NULL;
END
$$;
