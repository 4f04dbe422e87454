import { and, asc, desc, eq, inArray, lt, ne, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../db/client';
import { afterPosition, exactTime, keysetPage, type KeysetPosition } from '../db/keyset';
import { webhookDeliveries, webhookDeliveryAttempts, type WebhookDeliveryAttemptRow, type WebhookDeliveryRow } from '../db/schema';
import { eventSubject } from './events';

/** Webhook deliveries and their attempt log. Every write is keyed so that a retried activity rewrites the same row. */

/** Creates the delivery once; returns the row as stored (the earlier one when it already existed). */
export async function ensureDelivery(db: Db, row: typeof webhookDeliveries.$inferInsert): Promise<WebhookDeliveryRow> {
  await db.insert(webhookDeliveries).values(row).onConflictDoNothing({ target: webhookDeliveries.id });
  const stored = await getDelivery(db, row.id);
  if (!stored) throw new Error(`delivery ${row.id} missing right after insert`);
  return stored;
}

export async function getDelivery(db: Db, id: string): Promise<WebhookDeliveryRow | undefined> {
  const [row] = await db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, id));
  return row;
}

export interface AttemptRecord {
  deliveryId: string;
  attempt: number;
  url: string;
  responseStatus: number | null;
  responseBody: string | null;
  error: string | null;
  durationMs: number;
  /** The delivery's state after this attempt. */
  status: WebhookDeliveryRow['status'];
  nextAttemptAt: Date | null;
}

/** Logs one HTTP attempt and moves the delivery on; a succeeded delivery is never set back. */
export async function recordAttempt(db: Db, a: AttemptRecord): Promise<void> {
  await db.transaction(async (tx) => {
    const attempt = { url: a.url, responseStatus: a.responseStatus, responseBody: a.responseBody, error: a.error, durationMs: a.durationMs, attemptedAt: sql`now()` };
    await tx
      .insert(webhookDeliveryAttempts)
      .values({ deliveryId: a.deliveryId, attempt: a.attempt, ...attempt })
      .onConflictDoUpdate({ target: [webhookDeliveryAttempts.deliveryId, webhookDeliveryAttempts.attempt], set: attempt });
    await tx
      .update(webhookDeliveries)
      .set({
        status: a.status,
        attempts: sql`greatest(${webhookDeliveries.attempts}, ${a.attempt}::int)`,
        lastResponseStatus: a.responseStatus,
        lastError: a.error,
        nextAttemptAt: a.nextAttemptAt,
        updatedAt: sql`now()`,
      })
      .where(and(eq(webhookDeliveries.id, a.deliveryId), ne(webhookDeliveries.status, 'succeeded')));
  });
}

/** Ends a delivery without an HTTP attempt (its endpoint was deleted or disabled meanwhile). */
export async function abandonDelivery(db: Db, id: string, reason: string): Promise<void> {
  await db
    .update(webhookDeliveries)
    .set({ status: 'failed', lastError: reason, nextAttemptAt: null, updatedAt: sql`now()` })
    .where(and(eq(webhookDeliveries.id, id), eq(webhookDeliveries.status, 'pending')));
}

/**
 * Claims a finished delivery for a manual replay; undefined while it is still pending (its schedule is running) or once
 * it was replayed `maxReplays` times.
 */
export async function claimReplay(db: Db, id: string, maxReplays: number): Promise<WebhookDeliveryRow | undefined> {
  const [row] = await db
    .update(webhookDeliveries)
    .set({ status: 'pending', replays: sql`${webhookDeliveries.replays} + 1`, nextAttemptAt: sql`now()`, updatedAt: sql`now()` })
    .where(and(eq(webhookDeliveries.id, id), ne(webhookDeliveries.status, 'pending'), lt(webhookDeliveries.replays, maxReplays)))
    .returning();
  return row;
}

/** Undoes a claim whose replay could not be started, so the delivery does not look pending forever. */
export async function releaseReplay(db: Db, row: WebhookDeliveryRow, status: WebhookDeliveryRow['status']): Promise<void> {
  await db.update(webhookDeliveries).set({ status, nextAttemptAt: null, updatedAt: sql`now()` }).where(eq(webhookDeliveries.id, row.id));
}

export interface DeliveryPage {
  limit: number;
  after?: KeysetPosition;
}

/** An endpoint's delivery log, newest first, each delivery with its attempts. */
export async function listEndpointDeliveries(db: Db, endpointId: string, page: DeliveryPage) {
  const conditions: SQL[] = [eq(webhookDeliveries.endpointId, endpointId)];
  if (page.after) conditions.push(afterPosition(webhookDeliveries.createdAt, webhookDeliveries.id, page.after));
  const found = await db
    .select({ row: webhookDeliveries, exactTime: exactTime(webhookDeliveries.createdAt) })
    .from(webhookDeliveries)
    .where(and(...conditions))
    .orderBy(desc(webhookDeliveries.createdAt), desc(webhookDeliveries.id))
    .limit(page.limit + 1);
  const { rows: deliveries, hasMore, next } = keysetPage(found, page.limit);
  const attempts = deliveries.length
    ? await db
        .select()
        .from(webhookDeliveryAttempts)
        .where(inArray(webhookDeliveryAttempts.deliveryId, deliveries.map((d) => d.id)))
        .orderBy(asc(webhookDeliveryAttempts.attempt))
    : [];
  return { deliveries: deliveries.map((d) => ({ delivery: d, attempts: attempts.filter((a) => a.deliveryId === d.id) })), hasMore, next };
}

export function toDeliveryResource(delivery: WebhookDeliveryRow, attempts: WebhookDeliveryAttemptRow[]) {
  return {
    id: delivery.id,
    object: 'webhook_delivery' as const,
    endpoint_id: delivery.endpointId,
    webhook_id: delivery.webhookId,
    event_type: delivery.eventType,
    ...eventSubject(delivery.eventType, delivery.jobId),
    url: delivery.url,
    status: delivery.status,
    attempt_count: delivery.attempts,
    last_response_status: delivery.lastResponseStatus,
    last_error: delivery.lastError,
    next_attempt_at: delivery.nextAttemptAt ? delivery.nextAttemptAt.toISOString() : null,
    created_at: delivery.createdAt.toISOString(),
    updated_at: delivery.updatedAt.toISOString(),
    attempts: attempts.map((a) => ({
      attempt: a.attempt,
      url: a.url,
      response_status: a.responseStatus,
      response_body: a.responseBody,
      error: a.error,
      duration_ms: a.durationMs,
      attempted_at: a.attemptedAt.toISOString(),
    })),
  };
}
