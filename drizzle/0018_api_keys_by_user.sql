-- migrate: no-transaction
-- A user's keys are listed, counted and revoked by user (admin revocation, rotation); without this each is a scan of every key.
CREATE INDEX CONCURRENTLY IF NOT EXISTS "api_keys_user_id_idx" ON "api_keys" USING btree ("user_id","created_at");
