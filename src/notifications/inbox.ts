import { and, desc, eq, isNull, sql, type SQL } from 'drizzle-orm';
import type { Db } from '../db/client';
import { afterPosition, exactTime, keysetPage, type KeysetPosition } from '../db/keyset';
import { notifications, type NotificationRow } from '../db/schema';
import { eventSubject } from './events';

/**
 * The in-app inbox. `recordNotification` is the one write: unique on (job, event), so however often the notify step
 * runs (retried activity, replayed workflow, a second worker after a crash) the user sees one notification.
 */
export async function recordNotification(
  db: Db,
  row: Pick<typeof notifications.$inferInsert, 'id' | 'userId' | 'jobId' | 'event' | 'title' | 'message' | 'data'>,
): Promise<boolean> {
  // Statement text, prepared once per connection: every job's ending writes one (docs/decisions.md, "Worker CPU per job").
  const sql = db.$client;
  const inserted = await sql`
    insert into notifications (id, user_id, job_id, event, title, message, data)
    values (${row.id}, ${row.userId}, ${row.jobId}, ${row.event}, ${row.title}, ${row.message}, ${JSON.stringify(row.data)}::jsonb)
    on conflict (job_id, event) do nothing
    returning id`;
  return inserted.length > 0;
}

export interface InboxQuery {
  unreadOnly: boolean;
  limit: number;
  after?: KeysetPosition;
}

/** A user's notifications, newest first, one keyset page, and where the next page starts. */
export async function listNotifications(db: Db, userId: string, query: InboxQuery) {
  const conditions: SQL[] = [eq(notifications.userId, userId)];
  if (query.unreadOnly) conditions.push(isNull(notifications.readAt));
  if (query.after) conditions.push(afterPosition(notifications.createdAt, notifications.id, query.after));
  const found = await db
    .select({ row: notifications, exactTime: exactTime(notifications.createdAt) })
    .from(notifications)
    .where(and(...conditions))
    .orderBy(desc(notifications.createdAt), desc(notifications.id))
    .limit(query.limit + 1);
  return keysetPage(found, query.limit);
}

/** Marks one of the user's notifications read (the first read time stays); undefined when it is not theirs. */
export async function markNotificationRead(db: Db, userId: string, id: string): Promise<NotificationRow | undefined> {
  const [row] = await db
    .update(notifications)
    .set({ readAt: sql`coalesce(${notifications.readAt}, now())` })
    .where(and(eq(notifications.id, id), eq(notifications.userId, userId)))
    .returning();
  return row;
}

export function toNotificationResource(row: NotificationRow) {
  return {
    id: row.id,
    object: 'notification' as const,
    event: row.event,
    ...eventSubject(row.event, row.jobId),
    title: row.title,
    message: row.message,
    data: row.data,
    read: row.readAt !== null,
    read_at: row.readAt ? row.readAt.toISOString() : null,
    created_at: row.createdAt.toISOString(),
  };
}
