CREATE TABLE "admission_reservations" (
	"id" text PRIMARY KEY NOT NULL,
	"user_id" text NOT NULL,
	"expires_at" timestamp with time zone NOT NULL
);
--> statement-breakpoint
CREATE INDEX "admission_reservations_user_idx" ON "admission_reservations" USING btree ("user_id","expires_at");