-- The change feed (docs/decisions.md, "The change feed is polled"): every visible change of a generation row becomes a
-- generation_events row, whichever process wrote it. No NOTIFY: a notifying commit holds one cluster-wide lock through
-- its WAL flush, which serialized every projection write; the readers (src/notifications/event-hub.ts,
-- src/api/queue-position.ts) poll generation_events. The table is drizzle/0002's. Applied by the migrate step whenever
-- this file changes (src/db/routines.ts): every statement here must be safe to run again.

-- The payload's queue_position is always null: generations has no such column (the field stays for clients).
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

-- On insert and update only: a deleted row (retention pruning, an undone submit) writes no event.
CREATE OR REPLACE TRIGGER generations_change_feed
AFTER INSERT OR UPDATE ON generations
FOR EACH ROW EXECUTE FUNCTION record_generation_event();
