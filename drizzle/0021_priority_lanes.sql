-- Priority lanes (docs/decisions.md, "Priority lanes"): the batch lane's part of a user's active and queued jobs, kept
-- by the counts trigger (drizzle/routines/user_job_counts.sql) beside the totals, so admission checks a batch job against
-- the batch limits and an interactive one against the rest in O(1). Constant defaults: adding them rewrites nothing. No
-- fill: no job is batch before this migration.
ALTER TABLE "user_job_counts" ADD COLUMN IF NOT EXISTS "batch_active" integer DEFAULT 0 NOT NULL;
--> statement-breakpoint
ALTER TABLE "user_job_counts" ADD COLUMN IF NOT EXISTS "batch_queued" integer DEFAULT 0 NOT NULL;
