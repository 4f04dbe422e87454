import { sql } from 'drizzle-orm';
import { index, integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/**
 * Batches (POST /v1/batches): a batch's items are generations rows carrying its id (generations.batch_id). The counts
 * by status are kept by a trigger on generations (drizzle/routines/batches.sql), in each item's own transaction; the
 * batch is completed when none is queued or running.
 */
export const batches = pgTable(
  'batches',
  {
    id: text('id').primaryKey(),
    userId: text('user_id').notNull(),
    total: integer('total').notNull(),
    queued: integer('queued').notNull().default(0),
    running: integer('running').notNull().default(0),
    succeeded: integer('succeeded').notNull().default(0),
    failed: integer('failed').notNull().default(0),
    canceled: integer('canceled').notNull().default(0),
    expired: integer('expired').notNull().default(0),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull(),
    /** POST /v1/batches/:id/cancel was called: the batch reads `canceling`, then `canceled`. */
    cancelRequestedAt: timestamp('cancel_requested_at', { withTimezone: true }),
    /** Set by the item change that left none queued or running. */
    completedAt: timestamp('completed_at', { withTimezone: true }),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    index('batches_user_created_idx').on(t.userId, t.createdAt.desc(), t.id.desc()),
    index('batches_completed_idx').on(t.completedAt).where(sql`completed_at is not null`),
  ],
);

export type BatchRow = typeof batches.$inferSelect;
