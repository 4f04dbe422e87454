import { sql } from 'drizzle-orm';
import { index, integer, pgTable, primaryKey, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

/** Email notifications (drizzle/0020): a user's settings, and every ending queued for mail with what became of it. */
export const notificationSettings = pgTable(
  'notification_settings',
  {
    userId: text('user_id').primaryKey(),
    email: text('email'),
    emailVerifiedAt: timestamp('email_verified_at', { withTimezone: true }),
    onStatuses: text('on_statuses').array().notNull().default(sql`'{succeeded,failed,expired,canceled}'::text[]`),
    digestSeconds: integer('digest_seconds').notNull().default(300),
    /** SHA-256 (hex) of the verification link's token; null once used. */
    verifyTokenHash: text('verify_token_hash'),
    verifyExpiresAt: timestamp('verify_expires_at', { withTimezone: true }),
    verifySentAt: timestamp('verify_sent_at', { withTimezone: true }),
    unsubscribeToken: text('unsubscribe_token').notNull(),
    /** Set by the first ending queued since the last digest claimed (that ending signals the workflow); cleared by the claim. */
    digestDueAt: timestamp('digest_due_at', { withTimezone: true }),
    /** The job whose ending set digestDueAt: a retry of its notify step signals again. */
    digestWakeJob: text('digest_wake_job'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('notification_settings_unsubscribe_idx').on(t.unsubscribeToken),
    uniqueIndex('notification_settings_verify_idx').on(t.verifyTokenHash).where(sql`verify_token_hash is not null`),
  ],
);

export type EmailNotificationStatus = 'pending' | 'sending' | 'sent' | 'skipped' | 'unknown';

export const emailNotifications = pgTable(
  'email_notifications',
  {
    userId: text('user_id').notNull(),
    jobId: text('job_id').notNull(),
    event: text('event').notNull(),
    status: text('status').$type<EmailNotificationStatus>().notNull().default('pending'),
    /** The digest send that claimed it. */
    claim: text('claim'),
    /** The address it was mailed to. */
    email: text('email'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    sentAt: timestamp('sent_at', { withTimezone: true }),
  },
  (t) => [
    primaryKey({ name: 'email_notifications_pk', columns: [t.jobId, t.event, t.userId] }),
    index('email_notifications_pending_idx').on(t.userId, t.createdAt).where(sql`status = 'pending'`),
    index('email_notifications_claim_idx').on(t.claim).where(sql`status = 'sending'`),
    index('email_notifications_created_idx').on(t.createdAt),
  ],
);

export type NotificationSettingsRow = typeof notificationSettings.$inferSelect;
