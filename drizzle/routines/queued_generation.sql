-- The queued row of a generation, written in one place (docs/decisions.md, "Submit writes the row with its admission"):
-- by the submit's admission (admission.sql), by a replay whose first submit left none, and by a run's opening (a first
-- run's GPU activity at its slot, a reset run's first step; src/db/projection.ts insertQueued, openRun).
-- src/db/projection.ts queuedRow describes the same row, which a submit answers without reading it back. The table is
-- drizzle/0000's. Applied by the migrate step whenever this file changes (src/db/routines.ts): every statement here
-- must be safe to run again.

-- Without a run: the row as the submit writes it (updated when accepted), inserted when the job has none, nothing
-- otherwise. With a run (its opening, once per run): the same row stamped with the run, inserted when the job has none
-- (an undone submit whose workflow started all the same); a row no run has opened, or an older run opened, is reset to
-- it (for the first run that only stamps it; a newer run, after an operator's reset, reopens the job as queued). One
-- statement, so an undo of the submit (src/db/submissions.ts, which takes only rows no run has opened) either comes
-- first and the row is made again, or finds it opened and leaves it. Returns whether it wrote.
-- p_retry_of: the job a rerun repeats (POST /v1/generations/:id/retry), written with the row and never changed.

-- The version without p_retry_of: an overload beside the new one would make a call of seven arguments ambiguous.
DROP FUNCTION IF EXISTS vg_write_queued_generation(text, text, text, text, jsonb, timestamptz, timestamptz);
CREATE OR REPLACE FUNCTION vg_write_queued_generation(
  p_job_id text, p_user_id text, p_tier text, p_prompt text, p_params jsonb, p_accepted_at timestamptz,
  p_run_opened_at timestamptz DEFAULT NULL, p_retry_of text DEFAULT NULL
) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO generations AS g (
    id, user_id, tier, status, status_rank, prompt, params, attempt, progress, backend_job_id, dispatcher, run_opened_at,
    expected_done_at, video_url, error, created_at, started_at, completed_at, updated_at, retry_of
  )
  VALUES (
    p_job_id, p_user_id, p_tier, 'queued', 0, p_prompt, p_params, 0, 0, NULL, NULL, p_run_opened_at,
    NULL, NULL, NULL, p_accepted_at, NULL, NULL, CASE WHEN p_run_opened_at IS NULL THEN p_accepted_at ELSE now() END,
    p_retry_of
  )
  -- Every column of the queued row but the job's identity and its request (retry_of among them). A run-less write never gets past the WHERE
  -- (a job that has a row keeps it as it is).
  ON CONFLICT (id) DO UPDATE SET (
    status, status_rank, attempt, progress, backend_job_id, dispatcher, run_opened_at, expected_done_at, video_url,
    error, started_at, completed_at, updated_at
  ) = (
    excluded.status, excluded.status_rank, excluded.attempt, excluded.progress, excluded.backend_job_id,
    excluded.dispatcher, excluded.run_opened_at, excluded.expected_done_at, excluded.video_url, excluded.error,
    excluded.started_at, excluded.completed_at, excluded.updated_at
  )
  WHERE excluded.run_opened_at IS NOT NULL AND (g.run_opened_at IS NULL OR g.run_opened_at < excluded.run_opened_at);
  RETURN FOUND;
END
$$;
