-- Email notifications (GET/PUT /v1/notification-settings; src/notifications/email-store.ts). Two new tables, nothing
-- else touched.
-- notification_settings: one row per user who set an address. The verification token is kept as its SHA-256 only; the
-- unsubscribe token is random and stored as it is (every mail carries it; it can only turn mail off), made again when
-- the address changes. `digest_due_at` is set by the first ending queued since the last digest, which alone signals the
-- user's digest workflow (so a window holds one signal, however many jobs end in it); the digest's claim clears it.
CREATE TABLE IF NOT EXISTS "notification_settings" (
  "user_id" text PRIMARY KEY NOT NULL,
  "email" text,
  "email_verified_at" timestamp with time zone,
  "on_statuses" text[] DEFAULT '{succeeded,failed,expired,canceled}'::text[] NOT NULL,
  "digest_seconds" integer DEFAULT 300 NOT NULL,
  "verify_token_hash" text,
  "verify_expires_at" timestamp with time zone,
  "verify_sent_at" timestamp with time zone,
  "unsubscribe_token" text NOT NULL,
  "digest_due_at" timestamp with time zone,
  "digest_wake_job" text,
  "created_at" timestamp with time zone DEFAULT now() NOT NULL,
  "updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS "notification_settings_unsubscribe_idx" ON "notification_settings" USING btree ("unsubscribe_token");
--> statement-breakpoint
CREATE UNIQUE INDEX IF NOT EXISTS "notification_settings_verify_idx" ON "notification_settings" USING btree ("verify_token_hash") WHERE verify_token_hash is not null;
--> statement-breakpoint
-- email_notifications: one row per (user, job, event) ever queued for mail. `pending` until a digest claims it; the
-- claim (`sending`) commits before the mail is handed to SMTP, so no crash can mail it twice (docs/decisions.md,
-- "Email notifications"); then `sent` (with sent_at), or `skipped` (unsubscribed or address changed meanwhile), or
-- `unknown` (SMTP broke off after the message may have been accepted: never sent again).
CREATE TABLE IF NOT EXISTS "email_notifications" (
  "user_id" text NOT NULL,
  "job_id" text NOT NULL,
  "event" text NOT NULL,
  "status" text DEFAULT 'pending' NOT NULL,
  "claim" text,
  "email" text,
  "created_at" timestamp with time zone DEFAULT now() NOT NULL,
  "sent_at" timestamp with time zone,
  -- The job first: retention deletes a job's rows with the job, by this key.
  CONSTRAINT "email_notifications_pk" PRIMARY KEY ("job_id", "event", "user_id")
);
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "email_notifications_pending_idx" ON "email_notifications" USING btree ("user_id", "created_at") WHERE status = 'pending';
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "email_notifications_claim_idx" ON "email_notifications" USING btree ("claim") WHERE status = 'sending';
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "email_notifications_created_idx" ON "email_notifications" USING btree ("created_at");
