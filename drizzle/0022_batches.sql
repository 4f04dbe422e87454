-- migrate: no-transaction
-- Batches (POST /v1/batches; src/api/batch-submit.ts): one row per batch, and each item's link to its batch. Each
-- statement runs on its own and may run again (src/db/migrate.ts): the index on generations is built without blocking
-- its writes.
-- batches: the counts by status are kept by a trigger on generations (drizzle/routines/batches.sql) in the transaction
-- of each item's status change, so the item whose ending brings queued + running to 0 is the one that sets completed_at,
-- once, however many items end at the same moment.
CREATE TABLE IF NOT EXISTS "batches" (
  "id" text PRIMARY KEY NOT NULL,
  "user_id" text NOT NULL,
  "total" integer NOT NULL,
  "queued" integer DEFAULT 0 NOT NULL,
  "running" integer DEFAULT 0 NOT NULL,
  "succeeded" integer DEFAULT 0 NOT NULL,
  "failed" integer DEFAULT 0 NOT NULL,
  "canceled" integer DEFAULT 0 NOT NULL,
  "expired" integer DEFAULT 0 NOT NULL,
  "created_at" timestamp with time zone NOT NULL,
  "cancel_requested_at" timestamp with time zone,
  "completed_at" timestamp with time zone,
  "updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
-- A user's batches, newest first (GET /v1/batches, a keyset scan).
CREATE INDEX IF NOT EXISTS "batches_user_created_idx" ON "batches" USING btree ("user_id", "created_at" DESC, "id" DESC);
--> statement-breakpoint
-- Completed batches oldest first (retention).
CREATE INDEX IF NOT EXISTS "batches_completed_idx" ON "batches" USING btree ("completed_at") WHERE completed_at is not null;
--> statement-breakpoint
-- Nullable, no default: adding it rewrites nothing. Written with the item's queued row, never changed.
ALTER TABLE "generations" ADD COLUMN IF NOT EXISTS "batch_id" text;
--> statement-breakpoint
-- A batch's items in list order (GET /v1/generations?batch_id=); only items are in it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS "generations_batch_idx" ON "generations" USING btree ("batch_id", "created_at" DESC, "id" DESC) WHERE batch_id is not null;
