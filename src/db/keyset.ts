import { sql, type SQL } from 'drizzle-orm';
import type { AnyPgColumn } from 'drizzle-orm/pg-core';

/**
 * Keyset pages in (created_at desc, id desc) order, exact to the microsecond Postgres stores. A page's last row is where
 * the next one starts; its time must be carried whole: a Date keeps milliseconds only, and rows written by `now()` in the
 * same millisecond as a page's last row (a burst of notifications, say) would otherwise fall between two pages.
 */
export interface KeysetPosition {
  /** ISO 8601 UTC with the stored fraction of a second (up to six digits). */
  createdAt: string;
  id: string;
}

/** A timestamptz column as ISO 8601 UTC text with microseconds: what a page's last row gives the next page. */
export const exactTime = (column: AnyPgColumn): SQL<string> =>
  sql<string>`to_char(${column} at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;

/** Rows after `after` in (created_at desc, id desc) order: one row comparison, one index range. */
export const afterPosition = (createdAt: AnyPgColumn, id: AnyPgColumn, after: KeysetPosition): SQL =>
  sql`(${createdAt}, ${id}) < (${after.createdAt}::timestamptz, ${after.id})`;

/**
 * A page from rows read with one row more than `limit` (each with its creation time as `exactTime`): the page's rows,
 * whether more follow, and the position the next page starts after.
 */
export function keysetPage<T extends { id: string }>(found: Array<{ row: T; exactTime: string }>, limit: number) {
  const last = found.length > limit ? found[limit - 1] : undefined;
  const next: KeysetPosition | undefined = last && { createdAt: last.exactTime, id: last.row.id };
  return { rows: found.slice(0, limit).map((f) => f.row), hasMore: found.length > limit, next };
}
