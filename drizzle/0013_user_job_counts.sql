CREATE TABLE "user_job_counts" (
	"user_id" text PRIMARY KEY NOT NULL,
	"active" integer DEFAULT 0 NOT NULL,
	"queued" integer DEFAULT 0 NOT NULL,
	"day" date NOT NULL,
	"today" integer DEFAULT 0 NOT NULL
);
--> statement-breakpoint

-- Kept by the triggers below from every insert, delete and change of status_rank of a generation, whoever writes it (the
-- API's admission, the workflow's projection writes, an undone submit, an operator's SQL), so the counts cannot drift
-- from the rows. A row inserted with triggers disabled (session_replication_role = replica) is not counted.
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
--> statement-breakpoint
-- Named after generations_change_feed so they fire after it: a user's counts row is locked after the feed's per-user
-- lock, in that order on every path.
CREATE TRIGGER generations_counts AFTER INSERT OR DELETE ON generations
FOR EACH ROW EXECUTE FUNCTION count_user_jobs();
--> statement-breakpoint
CREATE TRIGGER generations_counts_rank AFTER UPDATE OF status_rank ON generations
FOR EACH ROW WHEN (OLD.status_rank IS DISTINCT FROM NEW.status_rank) EXECUTE FUNCTION count_user_jobs();
--> statement-breakpoint
-- The counts of the rows already there. The triggers exist from here on and writers wait for this migration's lock, so
-- nothing is counted twice or missed.
INSERT INTO user_job_counts (user_id, active, queued, day, today)
SELECT user_id,
       count(*) FILTER (WHERE status_rank < 2),
       count(*) FILTER (WHERE status_rank = 0),
       (now() AT TIME ZONE 'UTC')::date,
       count(*) FILTER (WHERE created_at >= date_trunc('day', now(), 'UTC'))
FROM generations GROUP BY user_id;
--> statement-breakpoint

-- As in drizzle/0009, read from the counts: O(1) however many jobs the user has.
CREATE OR REPLACE FUNCTION vg_user_job_counts(p_user_id text)
RETURNS TABLE (active int, today int)
LANGUAGE sql STABLE AS $$
  SELECT coalesce(max(c.active), 0), coalesce(max(CASE WHEN c.day = (now() AT TIME ZONE 'UTC')::date THEN c.today END), 0)
  FROM user_job_counts c WHERE c.user_id = p_user_id
$$;
--> statement-breakpoint

-- drizzle/0009's admission, same arguments, decisions and writes, with less work per submit: the token bucket's upsert
-- inline (a PL/pgSQL call per submit cost as much as the upsert), and the user's active, queued and today's jobs read
-- from user_job_counts instead of counted from index ranges that grew with the user's queue and day. The answer's
-- queued_before counts the user's queued jobs in every pool (a deployment has one pool).
CREATE OR REPLACE FUNCTION vg_admit_submission(
  p_user_id text,
  p_bucket_key text,
  p_burst float8,
  p_per_second float8,
  p_max_active int,
  p_daily_quota int,
  p_backlog_full boolean,
  p_idempotency_key text,
  p_request_hash text,
  p_job_id text,
  p_credits int,
  p_accepted_at timestamptz,
  p_pool text,
  p_tier text,
  p_fairness_weight real,
  p_prompt text,
  p_params jsonb
)
RETURNS TABLE (
  outcome text, tokens float8, active int, today int, available int, earlier_hash text, earlier_at timestamptz,
  queued_before int, oldest_queued_at timestamptz
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  v_tokens float8;
  v_allowed boolean;
  v_active int := 0;
  v_queued int := 0;
  v_today int := 0;
  v_available int;
  v_earlier_hash text;
  v_earlier_at timestamptz;
  v_oldest timestamptz;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('admission:' || p_user_id, 0));

  IF p_idempotency_key IS NOT NULL THEN
    SELECT k.request_hash, k.created_at INTO v_earlier_hash, v_earlier_at
    FROM idempotency_keys k WHERE k.user_id = p_user_id AND k.key = p_idempotency_key;
    IF FOUND THEN
      RETURN QUERY SELECT 'replay'::text, NULL::float8, NULL::int, NULL::int, NULL::int, v_earlier_hash, v_earlier_at, NULL::int, NULL::timestamptz;
      RETURN;
    END IF;
  END IF;

  -- The token bucket (vg_take_token's upsert).
  INSERT INTO rate_limit_buckets AS b (bucket_key, tokens, refilled_at, last_allowed)
  VALUES (p_bucket_key, p_burst - 1, now(), true)
  ON CONFLICT (bucket_key) DO UPDATE SET (tokens, refilled_at, last_allowed) = (
    SELECT level - CASE WHEN level >= 1 THEN 1 ELSE 0 END, now(), level >= 1
    FROM (SELECT least(p_burst, b.tokens + greatest(0, extract(epoch FROM now() - b.refilled_at)) * p_per_second) AS level) AS refill
  )
  RETURNING b.tokens, b.last_allowed INTO v_tokens, v_allowed;
  IF NOT v_allowed THEN
    RETURN QUERY SELECT 'rate_limited'::text, v_tokens, NULL::int, NULL::int, NULL::int, NULL::text, NULL::timestamptz, NULL::int, NULL::timestamptz;
    RETURN;
  END IF;

  SELECT c.active, c.queued, CASE WHEN c.day = (now() AT TIME ZONE 'UTC')::date THEN c.today ELSE 0 END
  INTO v_active, v_queued, v_today
  FROM user_job_counts c WHERE c.user_id = p_user_id;
  IF NOT FOUND THEN
    v_active := 0; v_queued := 0; v_today := 0;
  END IF;
  IF v_active >= p_max_active THEN
    RETURN QUERY SELECT 'too_many_active_jobs'::text, v_tokens, v_active, v_today, NULL::int, NULL::text, NULL::timestamptz, NULL::int, NULL::timestamptz;
    RETURN;
  END IF;
  IF v_today >= p_daily_quota THEN
    RETURN QUERY SELECT 'daily_quota_exceeded'::text, v_tokens, v_active, v_today, NULL::int, NULL::text, NULL::timestamptz, NULL::int, NULL::timestamptz;
    RETURN;
  END IF;
  IF p_backlog_full THEN
    RETURN QUERY SELECT 'capacity_exhausted'::text, v_tokens, v_active, v_today, NULL::int, NULL::text, NULL::timestamptz, NULL::int, NULL::timestamptz;
    RETURN;
  END IF;

  SELECT a.available INTO v_available FROM credit_accounts a WHERE a.user_id = p_user_id FOR UPDATE;
  IF coalesce(v_available, 0) < p_credits THEN
    RETURN QUERY SELECT 'insufficient_credits'::text, v_tokens, v_active, v_today, coalesce(v_available, 0), NULL::text, NULL::timestamptz, NULL::int, NULL::timestamptz;
    RETURN;
  END IF;

  IF p_idempotency_key IS NOT NULL THEN
    INSERT INTO idempotency_keys (user_id, key, request_hash, job_id, created_at)
    VALUES (p_user_id, p_idempotency_key, p_request_hash, p_job_id, p_accepted_at);
  END IF;
  -- The ledger's reserve key is the one src/credits/ledger.ts settles: `${jobId}:reserve`.
  INSERT INTO credit_ledger (user_id, job_id, kind, amount, entry_key)
  VALUES (p_user_id, p_job_id, 'reserve', p_credits, p_job_id || ':reserve')
  ON CONFLICT (entry_key) DO NOTHING;
  IF FOUND THEN
    UPDATE credit_accounts AS a
    SET available = a.available - p_credits, reserved = a.reserved + p_credits, updated_at = now()
    WHERE a.user_id = p_user_id;
    v_available := v_available - p_credits;
  END IF;
  INSERT INTO gpu_queue_entries (job_id, pool, user_id, tier, fairness_weight, admitted_at)
  VALUES (p_job_id, p_pool, p_user_id, p_tier, p_fairness_weight, p_accepted_at)
  ON CONFLICT (job_id) DO NOTHING;
  -- The user's oldest queued job: the first queued row of generations_user_active_idx (running ones are few).
  IF v_queued > 0 THEN
    SELECT g.created_at INTO v_oldest FROM generations g
    WHERE g.user_id = p_user_id AND g.status_rank = 0 ORDER BY g.created_at LIMIT 1;
  END IF;
  -- The same row src/db/projection.ts insertQueued writes (the workflow's first step calls it too: then a no-op).
  INSERT INTO generations (id, user_id, tier, status, status_rank, prompt, params, created_at, updated_at)
  VALUES (p_job_id, p_user_id, p_tier, 'queued', 0, p_prompt, p_params, p_accepted_at, p_accepted_at)
  ON CONFLICT (id) DO NOTHING;

  RETURN QUERY SELECT 'admitted'::text, v_tokens, v_active, v_today, v_available, NULL::text, NULL::timestamptz, v_queued, v_oldest;
END
$$;
