CREATE TABLE "gpu_capacity" (
	"pool" text PRIMARY KEY NOT NULL,
	"default_capacity" integer NOT NULL,
	"admin_capacity" integer,
	"backend_capacity" integer,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "gpu_queue_entries" (
	"job_id" text PRIMARY KEY NOT NULL,
	"pool" text NOT NULL,
	"user_id" text NOT NULL,
	"tier" text NOT NULL,
	"fairness_weight" real NOT NULL,
	"admitted_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "gpu_slot_leases" (
	"id" text PRIMARY KEY NOT NULL,
	"pool" text NOT NULL,
	"dispatcher_id" text NOT NULL,
	"job_id" text,
	"acquired_at" timestamp with time zone DEFAULT now() NOT NULL,
	"claimed_at" timestamp with time zone,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE TABLE "rate_limit_buckets" (
	"bucket_key" text PRIMARY KEY NOT NULL,
	"tokens" double precision NOT NULL,
	"refilled_at" timestamp with time zone NOT NULL,
	"last_allowed" boolean NOT NULL
);
--> statement-breakpoint
CREATE INDEX "gpu_queue_entries_pool_idx" ON "gpu_queue_entries" USING btree ("pool","admitted_at");--> statement-breakpoint
CREATE INDEX "gpu_queue_entries_pool_tier_idx" ON "gpu_queue_entries" USING btree ("pool","tier");--> statement-breakpoint
CREATE INDEX "gpu_slot_leases_pool_idx" ON "gpu_slot_leases" USING btree ("pool","expires_at");--> statement-breakpoint
CREATE INDEX "gpu_slot_leases_dispatcher_idx" ON "gpu_slot_leases" USING btree ("dispatcher_id");