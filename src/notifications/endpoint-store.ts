import { randomBytes } from 'node:crypto';
import { and, asc, eq, isNull, sql } from 'drizzle-orm';
import type { Db } from '../db/client';
import { webhookEndpoints, webhookRequestSecrets, type WebhookEndpointRow } from '../db/schema';
import { generateWebhookSecret } from '../lib/webhook-signature';

/** Webhook endpoints and signing secrets. A deleted endpoint is kept (soft delete) so its delivery log stays readable. */

const active = (userId: string, id: string) => and(eq(webhookEndpoints.id, id), eq(webhookEndpoints.userId, userId), isNull(webhookEndpoints.deletedAt));

/**
 * Creates the endpoint unless the user has `maxPerUser` already (then undefined). A user's creates take turns under a
 * transaction lock, so concurrent ones never count before each other's insert and pass the cap together.
 */
export async function createEndpointWithinLimit(
  db: Db,
  { userId, url, description, eventTypes }: { userId: string; url: string; description: string; eventTypes: string[] },
  maxPerUser: number,
): Promise<WebhookEndpointRow | undefined> {
  return db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`webhook_endpoints:${userId}`}, 0))`);
    const [{ count }] = await tx
      .select({ count: sql<number>`count(*)::int` })
      .from(webhookEndpoints)
      .where(and(eq(webhookEndpoints.userId, userId), isNull(webhookEndpoints.deletedAt)));
    if (count >= maxPerUser) return undefined;
    const [row] = await tx
      .insert(webhookEndpoints)
      .values({ id: `we_${randomBytes(12).toString('hex')}`, userId, url, description, eventTypes, secret: generateWebhookSecret() })
      .returning();
    return row;
  });
}

export async function listEndpoints(db: Db, userId: string): Promise<WebhookEndpointRow[]> {
  return db
    .select()
    .from(webhookEndpoints)
    .where(and(eq(webhookEndpoints.userId, userId), isNull(webhookEndpoints.deletedAt)))
    .orderBy(asc(webhookEndpoints.createdAt), asc(webhookEndpoints.id));
}

export async function getEndpoint(db: Db, userId: string, id: string): Promise<WebhookEndpointRow | undefined> {
  const [row] = await db.select().from(webhookEndpoints).where(active(userId, id));
  return row;
}

/** Any endpoint by id, deleted or not (deliveries look their endpoint up at each attempt). */
export async function findEndpoint(db: Db, id: string): Promise<WebhookEndpointRow | undefined> {
  const [row] = await db.select().from(webhookEndpoints).where(eq(webhookEndpoints.id, id));
  return row;
}

export async function deleteEndpoint(db: Db, userId: string, id: string): Promise<boolean> {
  const rows = await db.update(webhookEndpoints).set({ deletedAt: sql`now()`, updatedAt: sql`now()` }).where(active(userId, id)).returning({ id: webhookEndpoints.id });
  return rows.length > 0;
}

/** A new secret; the old one keeps signing (as a second signature) until the overlap ends, so receivers can switch over. */
export async function rotateEndpointSecret(db: Db, userId: string, id: string, overlapMs: number): Promise<WebhookEndpointRow | undefined> {
  const [row] = await db
    .update(webhookEndpoints)
    .set({
      previousSecret: sql`${webhookEndpoints.secret}`,
      previousSecretExpiresAt: new Date(Date.now() + overlapMs),
      secret: generateWebhookSecret(),
      updatedAt: sql`now()`,
    })
    .where(active(userId, id))
    .returning();
  return row;
}

export async function setEndpointEnabled(db: Db, userId: string, id: string): Promise<WebhookEndpointRow | undefined> {
  const [row] = await db.update(webhookEndpoints).set({ disabledAt: null, disabledReason: null, updatedAt: sql`now()` }).where(active(userId, id)).returning();
  return row;
}

export async function disableEndpoint(db: Db, id: string, reason: string): Promise<void> {
  await db
    .update(webhookEndpoints)
    .set({ disabledAt: sql`coalesce(${webhookEndpoints.disabledAt}, now())`, disabledReason: reason, updatedAt: sql`now()` })
    .where(eq(webhookEndpoints.id, id));
}

/** The user's enabled endpoints that want this event (an empty filter wants all). */
export async function endpointsFor(db: Db, userId: string, eventType: string): Promise<Array<{ id: string; url: string }>> {
  // Statement text, prepared once per connection: every job's ending asks (docs/decisions.md, "Worker CPU per job").
  return db.$client<Array<{ id: string; url: string }>>`
    select id, url from webhook_endpoints
    where user_id = ${userId} and deleted_at is null and disabled_at is null
      and (cardinality(event_types) = 0 or ${eventType} = any(event_types))
    order by created_at asc, id asc`;
}

/** The user's secret for per-request webhook_url deliveries, made on first use. */
export async function requestSecretFor(db: Db, userId: string): Promise<string> {
  await db.insert(webhookRequestSecrets).values({ userId, secret: generateWebhookSecret() }).onConflictDoNothing();
  const [row] = await db.select().from(webhookRequestSecrets).where(eq(webhookRequestSecrets.userId, userId));
  return row.secret;
}

/** The secrets that sign a delivery now: the current one, and the previous one while its overlap lasts. */
export function signingSecrets(endpoint: WebhookEndpointRow, now: Date = new Date()): string[] {
  const overlapping = endpoint.previousSecret && endpoint.previousSecretExpiresAt && endpoint.previousSecretExpiresAt > now;
  return overlapping ? [endpoint.secret, endpoint.previousSecret!] : [endpoint.secret];
}

export function toEndpointResource(row: WebhookEndpointRow, { withSecret = false } = {}) {
  return {
    id: row.id,
    object: 'webhook_endpoint' as const,
    url: row.url,
    description: row.description,
    events: row.eventTypes,
    status: row.disabledAt ? ('disabled' as const) : ('enabled' as const),
    disabled_reason: row.disabledReason,
    ...(withSecret ? { secret: row.secret } : {}),
    previous_secret_expires_at: row.previousSecretExpiresAt && row.previousSecretExpiresAt > new Date() ? row.previousSecretExpiresAt.toISOString() : null,
    created_at: row.createdAt.toISOString(),
    updated_at: row.updatedAt.toISOString(),
  };
}
