-- The change feed of drizzle/0002, writing the same events, without its NOTIFY and without turning the whole row
-- (prompt, params) into JSON twice per change (generations has no queue_position column: that field is always null).
-- A transaction that notifies takes one cluster-wide lock at commit and holds it through its WAL flush, so every
-- projection write (a submit's admission among them) waited for every other one to commit: under a submit flood
-- admissions spent more time waiting on that lock than running. The readers (src/notifications/event-hub.ts,
-- src/api/queue-position.ts) poll generation_events instead (docs/decisions.md).
CREATE OR REPLACE FUNCTION record_generation_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  event_type text;
BEGIN
  IF TG_OP = 'UPDATE'
     AND NEW.status IS NOT DISTINCT FROM OLD.status
     AND NEW.progress IS NOT DISTINCT FROM OLD.progress
     AND NEW.attempt IS NOT DISTINCT FROM OLD.attempt
     AND NEW.video_url IS NOT DISTINCT FROM OLD.video_url
     AND NEW.error IS NOT DISTINCT FROM OLD.error THEN
    RETURN NULL;
  END IF;
  event_type := CASE
    WHEN TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN 'generation.' || NEW.status
    ELSE 'generation.updated'
  END;
  -- One user's events commit in id order, so neither a client resuming after Last-Event-ID nor a reader polling a
  -- user's newest id ever skips one committed late.
  PERFORM pg_advisory_xact_lock(hashtextextended('generation_events:' || NEW.user_id, 0));
  INSERT INTO generation_events (user_id, job_id, type, payload)
  VALUES (
    NEW.user_id,
    NEW.id,
    event_type,
    jsonb_build_object(
      'generation_id', NEW.id,
      'status', NEW.status,
      'progress', NEW.progress,
      'attempt', NEW.attempt,
      'queue_position', NULL::jsonb,
      'video_url', NEW.video_url,
      'error', NEW.error,
      'updated_at', NEW.updated_at
    )
  );
  RETURN NULL;
END;
$$;
