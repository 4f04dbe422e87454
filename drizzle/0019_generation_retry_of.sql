-- A rerun's link to the job it repeats (POST /v1/generations/:id/retry). Nullable, no default: adding it rewrites
-- nothing and holds the table's lock only for the catalog change. Written with the queued row
-- (drizzle/routines/queued_generation.sql), never changed afterwards; no index, as nothing looks jobs up by it.
ALTER TABLE "generations" ADD COLUMN IF NOT EXISTS "retry_of" text;
