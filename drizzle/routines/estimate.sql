-- What a submit's admission would answer now, changing nothing (POST /v1/generations/estimate; docs/decisions.md,
-- "An estimate is the admission, rolled back"). Uses admission.sql. Applied by the migrate step whenever this file
-- changes (src/db/routines.ts): every statement here must be safe to run again.

-- Runs vg_admit_submission on the claim inside a block that always ends in an exception, so everything the admission
-- wrote (the token it took, the reservation, the key, the queue entry, the queued row and what their triggers wrote) is
-- rolled back with the block's subtransaction, and the locks it took are let go with it; its answer, kept in the OUT
-- parameters (variables are not rolled back), is what the caller gets. No second copy of any rule. One statement, so
-- the locks it takes (the user's admission lock, the user's bucket, counts and credit rows, as a submit does) are held
-- for the admission's time only and no transaction is left open across a round trip.
CREATE OR REPLACE FUNCTION vg_estimate_submission(
  p_claim jsonb,
  OUT outcome text, OUT tokens float8, OUT active int, OUT today int, OUT available int, OUT earlier_hash text,
  OUT earlier_at timestamptz, OUT queued_before int, OUT oldest_queued_at timestamptz
)
LANGUAGE plpgsql AS $$
DECLARE
  a record;
BEGIN
  BEGIN
    SELECT * INTO a FROM vg_admit_submission(p_claim);
    outcome := a.outcome; tokens := a.tokens; active := a.active; today := a.today; available := a.available;
    earlier_hash := a.earlier_hash; earlier_at := a.earlier_at; queued_before := a.queued_before;
    oldest_queued_at := a.oldest_queued_at;
    RAISE EXCEPTION USING ERRCODE = 'VGE01', MESSAGE = 'vg_estimate_submission: rolled back';
  EXCEPTION WHEN SQLSTATE 'VGE01' THEN
    NULL;
  END;
END
$$;
