import { sql } from 'drizzle-orm';
import { bigserial, index, integer, jsonb, pgTable, primaryKey, text, timestamp, uniqueIndex } from 'drizzle-orm/pg-core';

/**
 * Notifications: the change feed behind SSE, the in-app inbox, and webhook endpoints with their delivery log.
 * `generation_events` is written only by the trigger on `generations` (drizzle/routines/change_feed.sql).
 */

/** Every visible change of a generation, in per-user commit order; the id is the SSE event id. */
export const generationEvents = pgTable(
  'generation_events',
  {
    id: bigserial('id', { mode: 'number' }).primaryKey(),
    userId: text('user_id').notNull(),
    jobId: text('job_id').notNull(),
    /** `generation.<status>` when the status changed, else `generation.updated` (progress, attempt, queue position). */
    type: text('type').notNull(),
    payload: jsonb('payload').$type<Record<string, unknown>>().notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [index('generation_events_user_idx').on(t.userId, t.id), index('generation_events_job_idx').on(t.jobId, t.id)],
);

/** The in-app inbox: one row per terminal event of a job, whoever retries or replays the notify step. */
export const notifications = pgTable(
  'notifications',
  {
    id: text('id').primaryKey(),
    userId: text('user_id').notNull(),
    jobId: text('job_id').notNull(),
    event: text('event').notNull(),
    title: text('title').notNull(),
    message: text('message').notNull(),
    data: jsonb('data').$type<Record<string, unknown>>().notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    readAt: timestamp('read_at', { withTimezone: true }),
  },
  (t) => [
    uniqueIndex('notifications_job_event_idx').on(t.jobId, t.event),
    index('notifications_user_created_idx').on(t.userId, t.createdAt.desc(), t.id.desc()),
    index('notifications_user_unread_idx').on(t.userId, t.createdAt.desc(), t.id.desc()).where(sql`read_at is null`),
    index('notifications_created_idx').on(t.createdAt),
  ],
);

/** A user's webhook endpoint. The secret signs deliveries; after a rotation the previous one also signs until it expires. */
export const webhookEndpoints = pgTable(
  'webhook_endpoints',
  {
    id: text('id').primaryKey(),
    userId: text('user_id').notNull(),
    url: text('url').notNull(),
    description: text('description').notNull().default(''),
    /** Event types delivered; empty means all. */
    eventTypes: text('event_types').array().notNull().default(sql`'{}'::text[]`),
    secret: text('secret').notNull(),
    previousSecret: text('previous_secret'),
    previousSecretExpiresAt: timestamp('previous_secret_expires_at', { withTimezone: true }),
    disabledAt: timestamp('disabled_at', { withTimezone: true }),
    disabledReason: text('disabled_reason'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
    deletedAt: timestamp('deleted_at', { withTimezone: true }),
  },
  (t) => [index('webhook_endpoints_user_idx').on(t.userId, t.createdAt), index('webhook_endpoints_deleted_idx').on(t.deletedAt).where(sql`deleted_at is not null`)],
);

/** The secret that signs deliveries to a per-request `webhook_url`, one per user, made on first use. */
export const webhookRequestSecrets = pgTable('webhook_request_secrets', {
  userId: text('user_id').primaryKey(),
  secret: text('secret').notNull(),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
});

/** One event to one destination (an endpoint, or a job's webhook_url). Its id derives from the webhook-id and the target. */
export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    id: text('id').primaryKey(),
    userId: text('user_id').notNull(),
    jobId: text('job_id').notNull(),
    /** Null for a per-request webhook_url. */
    endpointId: text('endpoint_id').references(() => webhookEndpoints.id),
    eventType: text('event_type').notNull(),
    /** The Standard Webhooks message id: the same on every attempt and replay. */
    webhookId: text('webhook_id').notNull(),
    url: text('url').notNull(),
    /** The exact JSON sent, so every attempt carries the same bytes. */
    body: text('body').notNull(),
    status: text('status').$type<WebhookDeliveryStatus>().notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    replays: integer('replays').notNull().default(0),
    lastResponseStatus: integer('last_response_status'),
    lastError: text('last_error'),
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    index('webhook_deliveries_endpoint_idx').on(t.endpointId, t.createdAt.desc(), t.id.desc()),
    index('webhook_deliveries_job_idx').on(t.jobId),
    // Finished deliveries by when they finished (retention pruning).
    index('webhook_deliveries_finished_idx').on(t.updatedAt).where(sql`status <> 'pending'`),
  ],
);

/** The delivery log: one row per HTTP attempt. */
export const webhookDeliveryAttempts = pgTable(
  'webhook_delivery_attempts',
  {
    deliveryId: text('delivery_id')
      .notNull()
      .references(() => webhookDeliveries.id),
    attempt: integer('attempt').notNull(),
    url: text('url').notNull(),
    responseStatus: integer('response_status'),
    /** The start of the receiver's answer, for debugging. */
    responseBody: text('response_body'),
    error: text('error'),
    durationMs: integer('duration_ms').notNull(),
    attemptedAt: timestamp('attempted_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [primaryKey({ columns: [t.deliveryId, t.attempt] })],
);

export type WebhookDeliveryStatus = 'pending' | 'succeeded' | 'failed';
export type GenerationEventRow = typeof generationEvents.$inferSelect;
export type NotificationRow = typeof notifications.$inferSelect;
export type WebhookEndpointRow = typeof webhookEndpoints.$inferSelect;
export type WebhookDeliveryRow = typeof webhookDeliveries.$inferSelect;
export type WebhookDeliveryAttemptRow = typeof webhookDeliveryAttempts.$inferSelect;
