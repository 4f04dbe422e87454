-- Queued jobs leave a paused or down backend (docs/decisions.md, "Queued jobs leave a paused or down backend"): each
-- routed attempt records where it waits, for which attempt, and where else it could run; a GPU dispatcher finds those
-- waiting on a paused or down backend and asks their workflows to route them anew (reroute_asked_at: when it last asked).
ALTER TABLE "generations" ADD COLUMN IF NOT EXISTS "queued_on" text;
--> statement-breakpoint
ALTER TABLE "generations" ADD COLUMN IF NOT EXISTS "queued_attempt" integer;
--> statement-breakpoint
ALTER TABLE "generations" ADD COLUMN IF NOT EXISTS "queued_alternatives" text[];
--> statement-breakpoint
ALTER TABLE "generations" ADD COLUMN IF NOT EXISTS "reroute_asked_at" timestamp with time zone;
