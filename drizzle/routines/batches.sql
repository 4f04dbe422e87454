-- Batches (POST /v1/batches; docs/decisions.md, "A batch is admitted whole, in one statement"): the admission of a
-- whole batch, and the trigger that keeps each batch's counts. The table is drizzle/0021's. Uses credit_reservation.sql
-- and reads the counts user_job_counts.sql keeps. Applied by the migrate step whenever this file changes
-- (src/db/routines.ts): every statement here must be safe to run again.

-- What a batch asks admission, one field per column (src/api/batch-admission.ts batchClaimRecord). No function's
-- signature uses it, so it is dropped and made again as this file says.
DROP TYPE IF EXISTS vg_batch_claim;
CREATE TYPE vg_batch_claim AS (
  user_id text,
  bucket_key text,
  burst float8,
  per_second float8,
  -- Each lane's active-job limit: the interactive items count against max_active, the batch-lane ones (priority
  -- "batch") against max_active_batch.
  max_active int,
  max_active_batch int,
  daily_quota int,
  -- A lane's backlog cannot take the batch's items of that lane (decided by the API from its queue summary; false for
  -- a lane the batch has no item of).
  backlog_full boolean,
  batch_backlog_full boolean,
  idempotency_key text,
  request_hash text,
  batch_id text,
  accepted_at timestamptz,
  pool text,
  tier text,
  fairness_weight real
);

-- A batch's admission, all or nothing, under the user's admission lock (the one single submits take, so a batch and a
-- submit of one user are decided one after the other): a key already taken is a replay; then one request token, each
-- lane's active limit counting the batch's items of that lane (as a submit counts against its lane's), the daily limit
-- counting every item, each lane's backlog bound, and the credits of all items. When all pass it writes the batch row,
-- the key, and for each item its credit reservation (vg_reserve_credits, the one place reservations are made), gpu
-- queue entry and queued row (bulk: the row vg_write_queued_generation writes for a submit, with the item's batch_id; a
-- batch-lane item's params carry its priority, which the counts trigger reads). A refusal writes nothing but the token
-- it took. p_items: [{job_id, prompt, params, credits, reservation_key, priority}]. `active` answers the refused lane's
-- count, or the interactive lane's on admission; `batch_active` the batch lane's.
-- Its answer's columns changed (batch_active): dropped before it is made again.
DROP FUNCTION IF EXISTS vg_admit_batch(jsonb, jsonb);
CREATE FUNCTION vg_admit_batch(
  p_claim jsonb, p_items jsonb,
  OUT outcome text, OUT tokens float8, OUT active int, OUT batch_active int, OUT today int, OUT available int,
  OUT needed int, OUT earlier_hash text, OUT earlier_at timestamptz, OUT earlier_id text
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
  claim vg_batch_claim := jsonb_populate_record(NULL::vg_batch_claim, p_claim);
  v_allowed boolean;
  v_count int := jsonb_array_length(p_items);
  v_batch_items int;
  v_short boolean;
BEGIN
  IF num_nulls(
    claim.user_id, claim.bucket_key, claim.burst, claim.per_second, claim.max_active, claim.max_active_batch,
    claim.daily_quota, claim.backlog_full, claim.batch_backlog_full, claim.request_hash, claim.batch_id,
    claim.accepted_at, claim.pool, claim.tier, claim.fairness_weight
  ) > 0 THEN
    RAISE EXCEPTION 'vg_admit_batch: the claim lacks a field: %', p_claim;
  END IF;

  PERFORM pg_advisory_xact_lock(hashtextextended('admission:' || claim.user_id, 0));

  IF claim.idempotency_key IS NOT NULL THEN
    SELECT k.request_hash, k.created_at, k.job_id INTO earlier_hash, earlier_at, earlier_id
    FROM idempotency_keys k WHERE k.user_id = claim.user_id AND k.key = claim.idempotency_key;
    IF FOUND THEN
      outcome := 'replay';
      RETURN;
    END IF;
  END IF;

  -- One token for the whole batch: the bucket bounds requests; the items count against the job limits below. The same
  -- refill as admission.sql's.
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

  -- Each lane's active jobs (user_job_counts.sql keeps the batch lane's beside the totals) and today's (both lanes).
  SELECT count(*) FILTER (WHERE i.priority = 'batch') INTO v_batch_items FROM jsonb_to_recordset(p_items) AS i(priority text);
  SELECT c.active - c.batch_active, c.batch_active, CASE WHEN c.day = (now() AT TIME ZONE 'UTC')::date THEN c.today ELSE 0 END
  INTO active, batch_active, today
  FROM user_job_counts c WHERE c.user_id = claim.user_id;
  IF NOT FOUND THEN
    active := 0; batch_active := 0; today := 0;
  END IF;
  IF v_count > v_batch_items AND active + v_count - v_batch_items > claim.max_active THEN
    outcome := 'too_many_active_jobs';
    RETURN;
  END IF;
  IF v_batch_items > 0 AND batch_active + v_batch_items > claim.max_active_batch THEN
    outcome := 'too_many_active_batch_jobs';
    RETURN;
  END IF;
  IF today + v_count > claim.daily_quota THEN
    outcome := 'daily_quota_exceeded';
    RETURN;
  END IF;
  IF claim.backlog_full OR claim.batch_backlog_full THEN
    outcome := 'capacity_exhausted';
    RETURN;
  END IF;

  -- Every item's price must be there before any is reserved (an item whose key holds a reservation already still needs
  -- its price, as in admission.sql). The account row's lock is held from here to the commit.
  SELECT sum(i.credits)::int INTO needed FROM jsonb_to_recordset(p_items) AS i(credits int);
  SELECT a.available INTO available FROM credit_accounts a WHERE a.user_id = claim.user_id FOR UPDATE;
  available := coalesce(available, 0);
  IF available < needed THEN
    outcome := 'insufficient_credits';
    RETURN;
  END IF;
  SELECT bool_or(r.outcome = 'insufficient') INTO v_short
  FROM jsonb_to_recordset(p_items) AS i(job_id text, credits int, reservation_key text)
  CROSS JOIN LATERAL vg_reserve_credits(claim.user_id, i.job_id, i.reservation_key, i.credits) AS r;
  IF v_short THEN
    RAISE EXCEPTION 'vg_admit_batch: credits ran short after the check (% needed)', needed;
  END IF;
  SELECT a.available INTO available FROM credit_accounts a WHERE a.user_id = claim.user_id;

  IF claim.idempotency_key IS NOT NULL THEN
    INSERT INTO idempotency_keys (user_id, key, request_hash, job_id, created_at)
    VALUES (claim.user_id, claim.idempotency_key, claim.request_hash, claim.batch_id, claim.accepted_at);
  END IF;
  INSERT INTO batches (id, user_id, total, queued, created_at, updated_at)
  VALUES (claim.batch_id, claim.user_id, v_count, v_count, claim.accepted_at, claim.accepted_at);
  INSERT INTO gpu_queue_entries (job_id, pool, user_id, tier, fairness_weight, admitted_at)
  SELECT i.job_id, claim.pool, claim.user_id, claim.tier, claim.fairness_weight, claim.accepted_at
  FROM jsonb_to_recordset(p_items) AS i(job_id text)
  ON CONFLICT (job_id) DO NOTHING;
  INSERT INTO generations (
    id, user_id, tier, status, status_rank, prompt, params, attempt, progress, created_at, updated_at, batch_id
  )
  SELECT i.job_id, claim.user_id, claim.tier, 'queued', 0, i.prompt, i.params, 0, 0, claim.accepted_at, claim.accepted_at, claim.batch_id
  FROM jsonb_to_recordset(p_items) AS i(job_id text, prompt text, params jsonb);
  outcome := 'admitted';
END
$$;

-- A batch's counts follow its items: every change of an item's status moves one count from the old status to the new,
-- in the transaction that changed it (the workflow's projection write, the ending's terminal write, an operator's
-- reset). The change that leaves no item queued or running sets completed_at: only one can, as the batch row's lock
-- orders them. A reset that reopens an item reopens its batch; notifications are keyed, so it is not announced twice.
-- Named to fire after generations_change_feed and generations_counts_rank (triggers fire in name order), so the locks
-- are taken in the same order on every path: the user's feed lock, their counts row, then the batch row.
CREATE OR REPLACE FUNCTION tally_batch_items() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  UPDATE batches AS b SET
    queued = b.queued + (NEW.status = 'queued')::int - (OLD.status = 'queued')::int,
    running = b.running + (NEW.status = 'running')::int - (OLD.status = 'running')::int,
    succeeded = b.succeeded + (NEW.status = 'succeeded')::int - (OLD.status = 'succeeded')::int,
    failed = b.failed + (NEW.status = 'failed')::int - (OLD.status = 'failed')::int,
    canceled = b.canceled + (NEW.status = 'canceled')::int - (OLD.status = 'canceled')::int,
    expired = b.expired + (NEW.status = 'expired')::int - (OLD.status = 'expired')::int,
    completed_at = CASE
      WHEN b.queued + (NEW.status = 'queued')::int - (OLD.status = 'queued')::int
         + b.running + (NEW.status = 'running')::int - (OLD.status = 'running')::int = 0
      THEN coalesce(b.completed_at, now())
    END,
    updated_at = now()
  WHERE b.id = NEW.batch_id;
  RETURN NULL;
END
$$;

CREATE OR REPLACE TRIGGER generations_tally_batch AFTER UPDATE OF status ON generations
FOR EACH ROW WHEN (NEW.batch_id IS NOT NULL AND OLD.status IS DISTINCT FROM NEW.status) EXECUTE FUNCTION tally_batch_items();
