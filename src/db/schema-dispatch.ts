import { boolean, date, doublePrecision, index, integer, pgTable, primaryKey, real, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * GPU dispatch and admission: the live capacity of each GPU pool (a `gpu` task queue), the slot leases dispatchers
 * hold against it, each admitted job's place in a pool, and the per-user request buckets. Written by src/dispatch and
 * src/api/admission.ts only.
 */

/** A pool's live capacity: the smaller of what the operator set and what the backend reported; else the configured start. */
export const gpuCapacity = pgTable('gpu_capacity', {
  pool: text('pool').primaryKey(),
  /** GPU_SLOTS of the last dispatcher that started: used until the operator or the backend gives a number. */
  defaultCapacity: integer('default_capacity').notNull(),
  /** Set by PUT /admin/capacity; null when the operator has not set one. */
  adminCapacity: integer('admin_capacity'),
  /** The backend's own number, as last reported; null when it does not report one. */
  backendCapacity: integer('backend_capacity'),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/**
 * One GPU slot held by one dispatcher. A lease is taken before the dispatcher polls the `gpu` queue, carries the job once
 * its activity starts, and is deleted when the slot is released. The holder renews `expires_at`; a dead holder's leases
 * expire and are reclaimed by the next acquisition.
 */
export const gpuSlotLeases = pgTable(
  'gpu_slot_leases',
  {
    id: text('id').primaryKey(),
    pool: text('pool').notNull(),
    dispatcherId: text('dispatcher_id').notNull(),
    /** The job running on this slot; null while the slot waits for a task. */
    jobId: text('job_id'),
    acquiredAt: timestamp('acquired_at', { withTimezone: true }).notNull().defaultNow(),
    claimedAt: timestamp('claimed_at', { withTimezone: true }),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
  },
  (t) => [index('gpu_slot_leases_pool_idx').on(t.pool, t.expiresAt), index('gpu_slot_leases_dispatcher_idx').on(t.dispatcherId)],
);

/** Each admitted job's pool, tier and fairness weight: what backlog bounds and queue positions are computed from. */
export const gpuQueueEntries = pgTable(
  'gpu_queue_entries',
  {
    jobId: text('job_id').primaryKey(),
    pool: text('pool').notNull(),
    userId: text('user_id').notNull(),
    tier: text('tier').notNull(),
    fairnessWeight: real('fairness_weight').notNull(),
    admittedAt: timestamp('admitted_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('gpu_queue_entries_pool_idx').on(t.pool, t.admittedAt), index('gpu_queue_entries_pool_tier_idx').on(t.pool, t.tier)],
);

/** Per-user request token buckets (one row per bucket key), shared by every API instance. */
export const rateLimitBuckets = pgTable('rate_limit_buckets', {
  bucketKey: text('bucket_key').primaryKey(),
  tokens: doublePrecision('tokens').notNull(),
  refilledAt: timestamp('refilled_at', { withTimezone: true }).notNull(),
  /** Whether the last take found a token; lets one upsert both decide and report. */
  lastAllowed: boolean('last_allowed').notNull(),
});

/**
 * Each user's job counts, kept by triggers on generations (drizzle/routines/user_job_counts.sql) so admission reads them
 * in O(1) however many jobs the user has queued or made today: `active` (queued + running), `queued`, and `today`, the
 * jobs created on `day` (UTC). `batch_active` and `batch_queued` are the batch lane's part of `active` and `queued`.
 */
export const userJobCounts = pgTable('user_job_counts', {
  userId: text('user_id').primaryKey(),
  active: integer('active').notNull().default(0),
  queued: integer('queued').notNull().default(0),
  day: date('day').notNull(),
  today: integer('today').notNull().default(0),
  batchActive: integer('batch_active').notNull().default(0),
  batchQueued: integer('batch_queued').notNull().default(0),
});

/**
 * Each backend's health as every process sees it (src/dispatch/backend-health.ts): the dispatchers' health checks
 * (`probe_failures` in a row) and the circuit, opened by `call_failures` consecutive failed calls until `circuit_open_until`.
 */
export const backendHealth = pgTable('backend_health', {
  backend: text('backend').primaryKey(),
  probeFailures: integer('probe_failures').notNull().default(0),
  probedAt: timestamp('probed_at', { withTimezone: true }),
  callFailures: integer('call_failures').notNull().default(0),
  circuitOpenUntil: timestamp('circuit_open_until', { withTimezone: true }),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/** Backend jobs an attempt abandoned when it failed over (its backend down): canceled once the backend answers. */
export const backendCancels = pgTable(
  'backend_cancels',
  {
    backend: text('backend').notNull(),
    backendJobId: text('backend_job_id').notNull(),
    jobId: text('job_id').notNull(),
    tries: integer('tries').notNull().default(0),
    nextAt: timestamp('next_at', { withTimezone: true }).notNull().defaultNow(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ name: 'backend_cancels_pk', columns: [t.backend, t.backendJobId] }), index('backend_cancels_next_idx').on(t.nextAt)],
);
