-- Routing across backends (issue 22; src/domain/routing.ts). Which backend ran a job's latest attempt, and the backend
-- it failed over from; each backend's health and circuit, shared by every process; backend jobs an attempt abandoned
-- when it failed over, to be canceled once their backend answers again.
ALTER TABLE "generations" ADD COLUMN IF NOT EXISTS "backend" text;
--> statement-breakpoint
ALTER TABLE "generations" ADD COLUMN IF NOT EXISTS "failed_over_from" text;
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "backend_health" (
  "backend" text PRIMARY KEY NOT NULL,
  "probe_failures" integer DEFAULT 0 NOT NULL,
  "probed_at" timestamp with time zone,
  "call_failures" integer DEFAULT 0 NOT NULL,
  "circuit_open_until" timestamp with time zone,
  "updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE IF NOT EXISTS "backend_cancels" (
  "backend" text NOT NULL,
  "backend_job_id" text NOT NULL,
  "job_id" text NOT NULL,
  "tries" integer DEFAULT 0 NOT NULL,
  "next_at" timestamp with time zone DEFAULT now() NOT NULL,
  "created_at" timestamp with time zone DEFAULT now() NOT NULL,
  CONSTRAINT "backend_cancels_pk" PRIMARY KEY ("backend", "backend_job_id")
);
--> statement-breakpoint
CREATE INDEX IF NOT EXISTS "backend_cancels_next_idx" ON "backend_cancels" ("next_at");
