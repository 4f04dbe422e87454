-- The change feed behind SSE: every visible change of a generation row (status, progress, attempt, video URL, error,
-- queue position if the projection carries one) becomes a generation_events row and a NOTIFY, whichever process wrote it.
CREATE OR REPLACE FUNCTION record_generation_event() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
  new_row jsonb := to_jsonb(NEW);
  old_row jsonb;
  event_type text;
  event_id bigint;
BEGIN
  IF TG_OP = 'UPDATE' THEN
    old_row := to_jsonb(OLD);
    IF NEW.status IS NOT DISTINCT FROM OLD.status
       AND NEW.progress IS NOT DISTINCT FROM OLD.progress
       AND NEW.attempt IS NOT DISTINCT FROM OLD.attempt
       AND NEW.video_url IS NOT DISTINCT FROM OLD.video_url
       AND NEW.error IS NOT DISTINCT FROM OLD.error
       AND (new_row -> 'queue_position') IS NOT DISTINCT FROM (old_row -> 'queue_position') THEN
      RETURN NULL;
    END IF;
  END IF;
  event_type := CASE
    WHEN TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN 'generation.' || NEW.status
    ELSE 'generation.updated'
  END;
  -- One user's events commit in id order, so a client resuming after Last-Event-ID never skips one committed late.
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
      'queue_position', new_row -> 'queue_position',
      'video_url', NEW.video_url,
      'error', NEW.error,
      'updated_at', NEW.updated_at
    )
  )
  RETURNING id INTO event_id;
  PERFORM pg_notify('generation_events', NEW.user_id || ' ' || NEW.id || ' ' || event_id);
  RETURN NULL;
END;
$$;
--> statement-breakpoint
CREATE TRIGGER generations_change_feed
AFTER INSERT OR UPDATE ON generations
FOR EACH ROW EXECUTE FUNCTION record_generation_event();
