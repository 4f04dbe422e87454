import { drizzle } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import { ConfigError, type Config } from '../config';
import * as schema from './schema';

export type Sql = postgres.Sql;

/**
 * One postgres.js pool and its drizzle wrapper. Every process makes one and passes it down. Sessions run in UTC, so
 * timestamps come back as the text isoFromTimestamptz (src/lib/iso-time.ts) reads without a Date.
 */
export function createDatabase(url: string, { max = 10, settings = {} }: { max?: number; settings?: Record<string, string> } = {}) {
  const sql = postgres(url, { max, onnotice: () => {}, connection: { application_name: 'videogen', TimeZone: 'UTC', ...settings } });
  const db = drizzle(sql, { schema });
  return { sql, db, close: () => sql.end({ timeout: 5 }) };
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
