-- A job's credit reservation, made in one place (docs/decisions.md, "Credits are reserved by the API"): by the submit's
-- admission (admission.sql) and by the ledger (src/credits/ledger.ts reserveCredits: a run's own reservation). The key
-- is the ledger's (src/credits/ledger.ts reservationKey), which settles and undoes reservations by it; the API puts the
-- submit's in its admission claim. The tables are drizzle/0003's. Applied by the migrate step whenever this file changes
-- (src/db/routines.ts): every statement here must be safe to run again.

-- Moves `p_amount` credits from the user's available to reserved for the job, once per key (the ledger row's
-- entry_key), under the account row's lock: 'reserved' when it did; 'held' when the key holds a reservation already
-- (nothing moves, whatever the credits); 'insufficient' when the credits are short, and then nothing is written.
-- `available` is the user's available credits after the call. The key is probed only when the credits are short: the
-- insert finds it otherwise.
CREATE OR REPLACE FUNCTION vg_reserve_credits(
  p_user_id text, p_job_id text, p_entry_key text, p_amount int, OUT outcome text, OUT available int
)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  SELECT a.available INTO available FROM credit_accounts a WHERE a.user_id = p_user_id FOR UPDATE;
  available := coalesce(available, 0);
  IF available < p_amount THEN
    outcome := CASE WHEN EXISTS (SELECT 1 FROM credit_ledger l WHERE l.entry_key = p_entry_key) THEN 'held' ELSE 'insufficient' END;
    RETURN;
  END IF;
  INSERT INTO credit_ledger (user_id, job_id, kind, amount, entry_key)
  VALUES (p_user_id, p_job_id, 'reserve', p_amount, p_entry_key)
  ON CONFLICT (entry_key) DO NOTHING;
  IF NOT FOUND THEN
    outcome := 'held';
    RETURN;
  END IF;
  UPDATE credit_accounts AS a
  SET available = a.available - p_amount, reserved = a.reserved + p_amount, updated_at = now()
  WHERE a.user_id = p_user_id;
  available := available - p_amount;
  outcome := 'reserved';
END
$$;
