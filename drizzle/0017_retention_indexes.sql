-- migrate: no-transaction
-- The indexes retention pruning reads (src/retention), built without blocking writes. Each statement runs on its own
-- and may run again (src/db/migrate.ts).
-- A pruned job's idempotency key and ledger entries are found by its id (also undoSubmission's key delete, and
-- src/credits/ledger.ts's reads of a job's reservation, which scanned the whole ledger without it).
CREATE INDEX CONCURRENTLY IF NOT EXISTS "idempotency_keys_job_idx" ON "idempotency_keys" USING btree ("job_id");
--> statement-breakpoint
CREATE INDEX CONCURRENTLY IF NOT EXISTS "credit_ledger_job_idx" ON "credit_ledger" USING btree ("job_id") WHERE job_id is not null;
--> statement-breakpoint
-- Settlements oldest first: each goes with its reservation once both are past the ledger's window.
CREATE INDEX CONCURRENTLY IF NOT EXISTS "credit_ledger_settled_idx" ON "credit_ledger" USING btree ("created_at") WHERE kind in ('capture', 'release');
--> statement-breakpoint
CREATE INDEX CONCURRENTLY IF NOT EXISTS "notifications_created_idx" ON "notifications" USING btree ("created_at");
--> statement-breakpoint
-- Finished deliveries by when they finished; a pending one is not in it.
CREATE INDEX CONCURRENTLY IF NOT EXISTS "webhook_deliveries_finished_idx" ON "webhook_deliveries" USING btree ("updated_at") WHERE status <> 'pending';
--> statement-breakpoint
CREATE INDEX CONCURRENTLY IF NOT EXISTS "api_keys_revoked_idx" ON "api_keys" USING btree ("revoked_at") WHERE revoked_at is not null;
--> statement-breakpoint
CREATE INDEX CONCURRENTLY IF NOT EXISTS "webhook_endpoints_deleted_idx" ON "webhook_endpoints" USING btree ("deleted_at") WHERE deleted_at is not null;
