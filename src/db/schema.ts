import { sql } from 'drizzle-orm';
import { bigserial, index, integer, jsonb, pgTable, primaryKey, real, smallint, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';
import type { GenerationError } from '../domain/generation-errors';
import type { GenerationStatus } from '../domain/generation-state';

export const users = pgTable('users', {
  id: text('id').primaryKey(),
  name: text('name').notNull(),
  tier: text('tier').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

/** API keys are stored as SHA-256 hashes; the key itself is shown once, at creation. */
export const apiKeys = pgTable(
  'api_keys',
  {
    id: text('id').primaryKey(),
    userId: text('user_id').notNull().references(() => users.id),
    keyHash: text('key_hash').notNull(),
    /** First characters of the key, so a user can tell keys apart. */
    keyPrefix: text('key_prefix').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    /** When the key stops (or stopped) working; ahead of now during a rotation's grace period. Null: it works. */
    revokedAt: timestamp('revoked_at', { withTimezone: true }),
  },
  (t) => [
    uniqueIndex('api_keys_key_hash_idx').on(t.keyHash),
    index('api_keys_user_id_idx').on(t.userId, t.createdAt),
    index('api_keys_revoked_idx').on(t.revokedAt).where(sql`revoked_at is not null`),
  ],
);

/** A submit's idempotency key, scoped per user: the same key with the same body names the same job. */
export const idempotencyKeys = pgTable(
  'idempotency_keys',
  {
    userId: text('user_id').notNull().references(() => users.id),
    key: text('key').notNull(),
    requestHash: text('request_hash').notNull(),
    jobId: text('job_id').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.userId, t.key] }), index('idempotency_keys_job_idx').on(t.jobId)],
);

/** The projection clients read. Temporal is the source of truth; this is written monotonically (see projection.ts). */
export const generations = pgTable(
  'generations',
  {
    id: text('id').primaryKey(),
    userId: text('user_id').notNull().references(() => users.id),
    tier: text('tier').notNull(),
    status: text('status').$type<GenerationStatus>().notNull(),
    statusRank: smallint('status_rank').notNull(),
    prompt: text('prompt').notNull(),
    params: jsonb('params').$type<Record<string, unknown>>().notNull(),
    attempt: integer('attempt').notNull().default(0),
    progress: real('progress').notNull().default(0),
    backendJobId: text('backend_job_id'),
    /** Temporal identity of the GPU dispatcher running the current attempt (for operators chasing stuck jobs). */
    dispatcher: text('dispatcher'),
    /**
     * Start of the workflow run that owns the row (the workflow's clock at its first step), written by the run's opening
     * (a first run's when its GPU activity takes a slot) or its first write. An operator's reset starts a newer run,
     * which reopens the row; writes of older runs are then ignored. Null: no run has opened the row yet.
     */
    runOpenedAt: timestamp('run_opened_at', { withTimezone: true }),
    /** When the running attempt should have ended; past it the job is "stuck" until its deadline fires. */
    expectedDoneAt: timestamp('expected_done_at', { withTimezone: true }),
    videoUrl: text('video_url'),
    error: jsonb('error').$type<GenerationError>(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
    startedAt: timestamp('started_at', { withTimezone: true }),
    completedAt: timestamp('completed_at', { withTimezone: true }),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    /** The job this one reruns (POST /v1/generations/:id/retry); written with the queued row, never changed. */
    retryOf: text('retry_of'),
    /** The batch this job is an item of (POST /v1/batches); written with the queued row, never changed. */
    batchId: text('batch_id'),
    /** The backend of the latest attempt that reached one (routing across backends: src/domain/routing.ts). */
    backend: text('backend'),
    /** The backend the job left because it was down or paused: an attempt ran there, or routing passed it over. */
    failedOverFrom: text('failed_over_from'),
    /**
     * Where the job's latest routed attempt waits (its backend), which attempt that is, and the other backends that can
     * render it; written when the attempt is routed (src/dispatch/queued-reroutes.ts). An attempt the backend has not
     * accepted yet (`queued_attempt > attempt`) on a paused or down backend is asked to move; `reroute_asked_at` says when.
     */
    queuedOn: text('queued_on'),
    queuedAttempt: integer('queued_attempt'),
    queuedAlternatives: text('queued_alternatives').array(),
    rerouteAskedAt: timestamp('reroute_asked_at', { withTimezone: true }),
  },
  (t) => [
    // Serves "my jobs, newest first" as a keyset scan; NULLS FIRST matches ORDER BY ... DESC, so no sort is needed.
    index('generations_user_created_idx').on(t.userId, t.createdAt.desc().nullsFirst(), t.id.desc().nullsFirst()),
    index('generations_active_idx').on(t.status).where(sql`status_rank < 2`),
    // A user's unfinished jobs in order (admission's active count, queue positions), however many finished rows the
    // user has.
    index('generations_user_active_idx').on(t.userId, t.createdAt, t.id).where(sql`status_rank < 2`),
    // The latest completions first (the queue ETA's mean GPU time), read from the newest end however large the table.
    index('generations_completed_idx').on(t.completedAt.desc()).where(sql`completed_at is not null`),
    index('generations_batch_idx').on(t.batchId, t.createdAt.desc(), t.id.desc()).where(sql`batch_id is not null`),
  ],
);

export * from './schema-notifications';
export * from './schema-dispatch';
export * from './schema-email';
export * from './schema-batches';

/** Each user's credit balances; changed only together with a ledger row, in one transaction. */
export const creditAccounts = pgTable('credit_accounts', {
  userId: text('user_id').primaryKey().references(() => users.id),
  available: integer('available').notNull().default(0),
  reserved: integer('reserved').notNull().default(0),
  used: integer('used').notNull().default(0),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

export type CreditEntryKind = 'grant' | 'reserve' | 'capture' | 'release';

/**
 * The credits ledger. Unique keys make every movement happen once: one reserve per job, and one settlement (capture or
 * release, never both) per job, whoever retries.
 */
export const creditLedger = pgTable(
  'credit_ledger',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    userId: text('user_id').notNull().references(() => users.id),
    jobId: text('job_id'),
    kind: text('kind').$type<CreditEntryKind>().notNull(),
    amount: integer('amount').notNull(),
    /** Idempotency key of the movement: a job's reservation or settlement key (./ledger-keys.ts), or a grant's own key. */
    entryKey: text('entry_key').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('credit_ledger_entry_key_idx').on(t.entryKey),
    index('credit_ledger_user_idx').on(t.userId, t.createdAt),
    index('credit_ledger_job_idx').on(t.jobId).where(sql`job_id is not null`),
    // Settlements oldest first, for retention pruning (src/retention).
    index('credit_ledger_settled_idx').on(t.createdAt).where(sql`kind in ('capture', 'release')`),
  ],
);

export type UserRow = typeof users.$inferSelect;
export type GenerationRow = typeof generations.$inferSelect;
