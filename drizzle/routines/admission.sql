-- A submit's admission in one round trip (docs/decisions.md, "One round trip to admit a submit"). Uses
-- credit_reservation.sql and queued_generation.sql, and reads the counts user_job_counts.sql keeps. Applied by the
-- migrate step whenever this file changes (src/db/routines.ts): every statement here must be safe to run again.

-- The positional version of drizzle/0009 and 0013 (17 arguments), replaced by the claim below.
DROP FUNCTION IF EXISTS vg_admit_submission(
  text, text, float8, float8, int, int, boolean, text, text, text, int, timestamptz, text, text, real, text, jsonb
);

-- What a submit asks admission, one field per column. The API sends it as one JSON object with exactly these keys
-- (src/api/admission-store.ts claimRecord; a test holds the two equal). No function's signature uses it, so it is
-- dropped and made again as this file says.
DROP TYPE IF EXISTS vg_admission_claim;
CREATE TYPE vg_admission_claim AS (
  user_id text,
  -- The user's token bucket (rate_limit_buckets) and its rate.
  bucket_key text,
  burst float8,
  per_second float8,
  -- The tier's limits.
  max_active int,
  daily_quota int,
  -- The tier's backlog is at its bound (decided by the API from its queue summary; refused here so the limits keep
  -- their precedence).
  backlog_full boolean,
  -- The submit's Idempotency-Key (null when it has none) and its request's hash.
  idempotency_key text,
  request_hash text,
  -- The job, its price and its reservation's ledger key (src/credits/ledger.ts reservationKey), and when it was
  -- accepted.
  job_id text,
  credits int,
  reservation_key text,
  accepted_at timestamptz,
  -- Its gpu queue entry.
  pool text,
  tier text,
  fairness_weight real,
  -- Its queued row's request: the prompt, and the rest as src/db/projection.ts rowParams keeps it.
  prompt text,
  params jsonb,
  -- The job a rerun repeats (POST /v1/generations/:id/retry); null for a submit.
  retry_of text,
  -- The job's lane, 'interactive' or 'batch': max_active is that lane's limit, counted against the user's jobs in the
  -- lane, and the answer's queue figures are the lane's.
  priority text
);

-- Under the user's advisory lock (so concurrent submits of one user, on any API instance, are decided one after another):
-- the idempotency key (a key already taken makes this submit a replay, neither refused nor counted), the request rate,
-- the active and daily limits, the tier's backlog bound and the job's credits. When all pass, it writes the credit
-- reservation, the key, the job's gpu queue entry and its queued row; the caller then starts the workflow, and undoes
-- all of it (src/db/submissions.ts) if Temporal refuses the start. A refusal writes nothing but the token it took.
-- Answers one row: the outcome, and what the API's answer needs of it (null where that outcome has nothing to say),
-- among it how many of the user's jobs wait ahead of this one (in every pool: a deployment has one) and since when.
-- Its answer's columns are OUT parameters, not a table: a set-returning function costs a tuplestore per call. (A
-- change of those columns needs a DROP FUNCTION before the CREATE.)
CREATE OR REPLACE FUNCTION vg_admit_submission(
  p_claim jsonb,
  OUT outcome text, OUT tokens float8, OUT active int, OUT today int, OUT available int, OUT earlier_hash text,
  OUT earlier_at timestamptz, OUT queued_before int, OUT oldest_queued_at timestamptz
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  claim vg_admission_claim := jsonb_populate_record(NULL::vg_admission_claim, p_claim);
  v_allowed boolean;
  v_queued int;
  v_reservation record;
BEGIN
  -- A key the claim lacks would read as null and pass every check: refuse the call instead.
  IF num_nulls(
    claim.user_id, claim.bucket_key, claim.burst, claim.per_second, claim.max_active, claim.daily_quota,
    claim.backlog_full, claim.request_hash, claim.job_id, claim.credits, claim.reservation_key, claim.accepted_at,
    claim.pool, claim.tier, claim.fairness_weight, claim.prompt, claim.params, claim.priority
  ) > 0 THEN
    RAISE EXCEPTION 'vg_admit_submission: the claim lacks a field: %', p_claim - 'prompt' - 'params';
  END IF;

  PERFORM pg_advisory_xact_lock(hashtextextended('admission:' || claim.user_id, 0));

  IF claim.idempotency_key IS NOT NULL THEN
    SELECT k.request_hash, k.created_at INTO earlier_hash, earlier_at
    FROM idempotency_keys k WHERE k.user_id = claim.user_id AND k.key = claim.idempotency_key;
    IF FOUND THEN
      outcome := 'replay';
      RETURN;
    END IF;
  END IF;

  -- The token bucket: refilled for the time since its last refill (capped at the burst), one token taken if there is
  -- one; the upsert locks the row, so concurrent takes queue up. Inline: a PL/pgSQL call per submit cost as much as the
  -- upsert. src/api/admission-store.ts peekRequestTokens reads the level the same way without taking one.
  INSERT INTO rate_limit_buckets AS b (bucket_key, tokens, refilled_at, last_allowed)
  VALUES (claim.bucket_key, claim.burst - 1, now(), true)
  ON CONFLICT (bucket_key) DO UPDATE SET (tokens, refilled_at, last_allowed) = (
    SELECT level - CASE WHEN level >= 1 THEN 1 ELSE 0 END, now(), level >= 1
    FROM (SELECT least(claim.burst, b.tokens + greatest(0, extract(epoch FROM now() - b.refilled_at)) * claim.per_second) AS level) AS refill
  )
  RETURNING b.tokens, b.last_allowed INTO tokens, v_allowed;
  IF NOT v_allowed THEN
    outcome := 'rate_limited';
    RETURN;
  END IF;

  -- The user's active and queued jobs in the claim's lane, and today's jobs (both lanes): one row, which
  -- user_job_counts.sql's triggers keep.
  SELECT CASE WHEN claim.priority = 'batch' THEN c.batch_active ELSE c.active - c.batch_active END,
         CASE WHEN claim.priority = 'batch' THEN c.batch_queued ELSE c.queued - c.batch_queued END,
         CASE WHEN c.day = (now() AT TIME ZONE 'UTC')::date THEN c.today ELSE 0 END
  INTO active, v_queued, today
  FROM user_job_counts c WHERE c.user_id = claim.user_id;
  IF NOT FOUND THEN
    active := 0; v_queued := 0; today := 0;
  END IF;
  IF active >= claim.max_active THEN
    outcome := 'too_many_active_jobs';
    RETURN;
  END IF;
  IF today >= claim.daily_quota THEN
    outcome := 'daily_quota_exceeded';
    RETURN;
  END IF;
  IF claim.backlog_full THEN
    outcome := 'capacity_exhausted';
    RETURN;
  END IF;

  -- The submit's reservation (credit_reservation.sql). A submit whose key is held already still needs its price in
  -- credits: it is a job under the id of one retention pruned (the ledger keeps the earlier job's key), and its run
  -- will reserve under its own key.
  v_reservation := vg_reserve_credits(claim.user_id, claim.job_id, claim.reservation_key, claim.credits);
  available := v_reservation.available;
  IF v_reservation.outcome = 'insufficient' OR (v_reservation.outcome = 'held' AND available < claim.credits) THEN
    outcome := 'insufficient_credits';
    RETURN;
  END IF;

  IF claim.idempotency_key IS NOT NULL THEN
    INSERT INTO idempotency_keys (user_id, key, request_hash, job_id, created_at)
    VALUES (claim.user_id, claim.idempotency_key, claim.request_hash, claim.job_id, claim.accepted_at);
  END IF;
  INSERT INTO gpu_queue_entries (job_id, pool, user_id, tier, fairness_weight, admitted_at)
  VALUES (claim.job_id, claim.pool, claim.user_id, claim.tier, claim.fairness_weight, claim.accepted_at)
  ON CONFLICT (job_id) DO NOTHING;
  -- The user's oldest queued job in the lane: the first such row of generations_user_active_idx (running ones are
  -- few; the other lane's queued rows older than it are passed over).
  queued_before := v_queued;
  IF v_queued > 0 THEN
    SELECT g.created_at INTO oldest_queued_at FROM generations g
    WHERE g.user_id = claim.user_id AND g.status_rank = 0 AND coalesce(g.params->>'priority', 'interactive') = claim.priority
    ORDER BY g.created_at LIMIT 1;
  END IF;
  PERFORM vg_write_queued_generation(claim.job_id, claim.user_id, claim.tier, claim.prompt, claim.params, claim.accepted_at, NULL, claim.retry_of);
  outcome := 'admitted';
END
$$;
