import { drizzle } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import { ConfigError, type Config } from '../config';
import * as schema from './schema';

export type Sql = postgres.Sql;

/**
 * One postgres.js pool and its drizzle wrapper. Every process makes one and passes it down. Sessions run in UTC, so
 * timestamps come back as the text isoFromTimestamptz (src/lib/iso-time.ts) reads without a Date. The service's pools
 * set a statement_timeout (DATABASE_STATEMENT_TIMEOUT_MS), so no request or activity waits on one statement for ever;
 * the migration step's pool sets none.
 */
export function createDatabase(
  url: string,
  { max = 10, statementTimeoutMs = 0, settings = {} }: { max?: number; statementTimeoutMs?: number; settings?: Record<string, string> } = {},
) {
  const connection: Record<string, string> = { application_name: 'videogen', TimeZone: 'UTC', ...settings };
  if (statementTimeoutMs > 0) connection.statement_timeout = String(statementTimeoutMs);
  const sql = postgres(url, { max, onnotice: () => {}, connection, backoff: reconnectDelaySeconds });
  const db = drizzle(sql, { schema });
  /** Opens every connection of the pool now, so the first burst of requests does not wait for their setup. */
  const warm = async () => void (await Promise.all(Array.from({ length: max }, () => sql`select 1`)));
  return { sql, db, warm, close: () => sql.end({ timeout: 5 }) };
}

/**
 * Seconds before a closed connection tries again, after `failures` failed attempts of the pool in a row: 50 ms doubling,
 * at most 2 s, jittered. postgres.js's default grows to 20 s (3^n / 100 s), so after an outage of a few seconds the pool
 * kept every request waiting, and then failing, for up to 20 s after Postgres was back. Ten connections trying every
 * 2 s is no load on a server that is down.
 */
export function reconnectDelaySeconds(failures: number): number {
  return (0.5 + Math.random() / 2) * Math.min(0.05 * 2 ** failures, 2);
}

export type Database = ReturnType<typeof createDatabase>;
export type Db = Database['db'];

/** Processes started alone need DATABASE_URL; `npm start` sets it (to its embedded Postgres unless one was given). */
export function requireDatabaseUrl(config: Config): string {
  if (!config.database.url) {
    throw new ConfigError('DATABASE_URL is not set: start everything with `npm start` (embedded Postgres), or point DATABASE_URL at a server');
  }
  return config.database.url;
}
