-- A submit's admission in one round trip (see docs/decisions.md, "One round trip to admit a submit").

-- The token bucket: refilled for the time since its last refill (capped at the burst), one token taken if there is one;
-- the decision and the new level come back together. The upsert locks the row, so concurrent takes queue up.
CREATE OR REPLACE FUNCTION vg_take_token(p_bucket_key text, p_burst float8, p_per_second float8)
RETURNS TABLE (tokens float8, allowed boolean)
LANGUAGE sql VOLATILE AS $$
  INSERT INTO rate_limit_buckets AS b (bucket_key, tokens, refilled_at, last_allowed)
  VALUES (p_bucket_key, p_burst - 1, now(), true)
  ON CONFLICT (bucket_key) DO UPDATE SET (tokens, refilled_at, last_allowed) = (
    SELECT level - CASE WHEN level >= 1 THEN 1 ELSE 0 END, now(), level >= 1
    FROM (SELECT least(p_burst, b.tokens + greatest(0, extract(epoch FROM now() - b.refilled_at)) * p_per_second) AS level) AS refill
  )
  RETURNING b.tokens, b.last_allowed
$$;
--> statement-breakpoint

-- A user's active jobs (queued or running) and jobs created today (UTC), the same way for admission, its refusals and
-- GET /v1/usage. Admission writes a job's row in the same transaction, under the same lock, so nothing is pending.
CREATE OR REPLACE FUNCTION vg_user_job_counts(p_user_id text)
RETURNS TABLE (active int, today int)
LANGUAGE sql STABLE AS $$
  -- Two index ranges (generations_user_active_idx, generations_user_created_idx): the cost does not grow with the
  -- user's finished history.
  SELECT
    (SELECT count(*)::int FROM generations WHERE user_id = p_user_id AND status_rank < 2),
    (SELECT count(*)::int FROM generations WHERE user_id = p_user_id AND created_at >= date_trunc('day', now(), 'UTC'))
$$;
--> statement-breakpoint

-- Under the user's advisory lock (so concurrent submits of one user, on any API instance, are decided one after another):
-- the idempotency key (a key already taken makes this submit a replay, neither refused nor counted), the request rate,
-- the active and daily limits, the tier's backlog bound (decided by the caller from its queue summary, refused here so
-- the limits keep their precedence) and the job's credits. When all pass, it writes the key, the credit reservation
-- (ledger row + balances), the job's gpu queue entry and its queued projection row; the caller then starts the workflow,
-- and undoes all of it if the start fails. A refusal writes nothing but the token it took. Also returns what the
-- answer's queue position needs: how many of the user's jobs wait in the pool ahead of this one, and since when.
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
DECLARE
  v_tokens float8;
  v_allowed boolean;
  v_active int;
  v_today int;
  v_available int;
  v_earlier_hash text;
  v_earlier_at timestamptz;
  v_queued int;
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

  SELECT t.tokens, t.allowed INTO v_tokens, v_allowed FROM vg_take_token(p_bucket_key, p_burst, p_per_second) AS t;
  IF NOT v_allowed THEN
    RETURN QUERY SELECT 'rate_limited'::text, v_tokens, NULL::int, NULL::int, NULL::int, NULL::text, NULL::timestamptz, NULL::int, NULL::timestamptz;
    RETURN;
  END IF;

  SELECT c.active, c.today INTO v_active, v_today FROM vg_user_job_counts(p_user_id) AS c;
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
    UPDATE credit_accounts
    SET available = credit_accounts.available - p_credits, reserved = credit_accounts.reserved + p_credits, updated_at = now()
    WHERE user_id = p_user_id;
    v_available := v_available - p_credits;
  END IF;
  INSERT INTO gpu_queue_entries (job_id, pool, user_id, tier, fairness_weight, admitted_at)
  VALUES (p_job_id, p_pool, p_user_id, p_tier, p_fairness_weight, p_accepted_at)
  ON CONFLICT (job_id) DO NOTHING;
  -- The user's queued rows (generations_user_active_idx), each checked for the pool by its entry's key: a join here
  -- was planned as a scan of the whole pool's entries.
  SELECT count(*)::int, min(g.created_at) INTO v_queued, v_oldest
  FROM generations g
  WHERE g.user_id = p_user_id AND g.status_rank = 0
    AND (SELECT e.pool FROM gpu_queue_entries e WHERE e.job_id = g.id) = p_pool;
  -- The same row src/db/projection.ts insertQueued writes (the workflow's first step calls it too: then a no-op).
  INSERT INTO generations (id, user_id, tier, status, status_rank, prompt, params, created_at, updated_at)
  VALUES (p_job_id, p_user_id, p_tier, 'queued', 0, p_prompt, p_params, p_accepted_at, p_accepted_at)
  ON CONFLICT (id) DO NOTHING;

  RETURN QUERY SELECT 'admitted'::text, v_tokens, v_active, v_today, v_available, NULL::text, NULL::timestamptz, v_queued, v_oldest;
END
$$;
