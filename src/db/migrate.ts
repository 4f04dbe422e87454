import path from 'node:path';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import { createDatabase } from './client';

const MIGRATION_LOCK_ID = 727_001;

export const MIGRATIONS_FOLDER = path.resolve(__dirname, '../../drizzle');

/** Applies the drizzle-kit migrations in drizzle/. Safe to run from several processes: drizzle takes them in order. */
export async function runMigrations(url: string): Promise<void> {
  // One connection, so the advisory lock covers the migration when several processes start at once.
  const { db, sql, close } = createDatabase(url, { max: 1 });
  try {
    await sql`select pg_advisory_lock(${MIGRATION_LOCK_ID})`;
    await migrate(db, { migrationsFolder: MIGRATIONS_FOLDER });
    await sql`select pg_advisory_unlock(${MIGRATION_LOCK_ID})`;
  } finally {
    await close();
  }
}
