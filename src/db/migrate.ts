import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import postgres from 'postgres';
import { applyRoutines, readRoutines } from './routines';

const MIGRATION_LOCK_ID = 727_001;
const LOCK_POLL_MS = 100;

export const MIGRATIONS_FOLDER = path.resolve(__dirname, '../../drizzle');

/**
 * The first line of a migration that cannot run inside a transaction (CREATE INDEX CONCURRENTLY). Its statements run one
 * by one, and it is recorded only after the last, so each must be safe to run again (IF NOT EXISTS): a build that was
 * interrupted is taken up by the next run, which first drops the INVALID index such a build leaves behind.
 */
export const NO_TRANSACTION_MARKER = '-- migrate: no-transaction';

export interface Migration {
  tag: string;
  /** The journal's `when`: drizzle records it as created_at and applies what is newer than the newest recorded. */
  when: number;
  /** sha256 of the file, as drizzle records it. */
  hash: string;
  statements: string[];
  transactional: boolean;
}

/** The migrations of drizzle/meta/_journal.json in order, read and split as drizzle's migrator does. */
export function readMigrations(folder: string = MIGRATIONS_FOLDER): Migration[] {
  const journal = JSON.parse(fs.readFileSync(path.join(folder, 'meta/_journal.json'), 'utf8')) as { entries: Array<{ tag: string; when: number }> };
  return journal.entries.map(({ tag, when }) => {
    const text = fs.readFileSync(path.join(folder, `${tag}.sql`), 'utf8');
    return {
      tag,
      when,
      hash: createHash('sha256').update(text).digest('hex'),
      statements: text.split('--> statement-breakpoint'),
      transactional: !text.trimStart().startsWith(NO_TRANSACTION_MARKER),
    };
  });
}

export interface MigrationRun {
  /** Tags of the numbered migrations applied. */
  migrations: string[];
  /** Names of the routines (src/db/routines.ts) applied. */
  routines: string[];
}

/**
 * Applies the pending migrations of `folder`, then its routines (`folder/routines`, src/db/routines.ts), and returns
 * what it applied. The bookkeeping of migrations is drizzle's own table (drizzle.__drizzle_migrations), so a database
 * migrated by drizzle's migrator carries on where it stopped. Each migration runs in a transaction of its own, except
 * those marked NO_TRANSACTION_MARKER. Several processes may run this at once: one applies, the others wait for its
 * advisory lock and then find nothing pending.
 */
export async function runMigrations(url: string, { folder = MIGRATIONS_FOLDER }: { folder?: string } = {}): Promise<MigrationRun> {
  const migrations = readMigrations(folder);
  const routines = readRoutines(folder);
  // One connection: the session's advisory lock covers everything this run does.
  const sql = postgres(url, { max: 1, onnotice: () => {}, connection: { application_name: 'videogen-migrate' } });
  try {
    await lock(sql);
    try {
      await sql`create schema if not exists drizzle`;
      await sql`create table if not exists drizzle.__drizzle_migrations (id serial primary key, hash text not null, created_at bigint)`;
      const [last] = await sql<{ created_at: string }[]>`select created_at from drizzle.__drizzle_migrations order by created_at desc limit 1`;
      const appliedUpTo = last ? Number(last.created_at) : -Infinity;
      const applied: string[] = [];
      for (const migration of migrations) {
        if (migration.when <= appliedUpTo) continue;
        if (migration.transactional) {
          await sql.begin(async (tx) => {
            for (const statement of migration.statements) await tx.unsafe(statement);
            await record(tx, migration);
          });
        } else {
          for (const statement of migration.statements) {
            await dropInvalidIndex(sql, statement);
            await sql.unsafe(statement);
          }
          await record(sql, migration);
        }
        applied.push(migration.tag);
      }
      // After any migration every routine is applied again: a migration may have replaced or dropped one.
      return { migrations: applied, routines: await applyRoutines(sql, routines, { all: applied.length > 0 }) };
    } finally {
      await sql`select pg_advisory_unlock(${MIGRATION_LOCK_ID})`;
    }
  } finally {
    await sql.end({ timeout: 5 });
  }
}

/**
 * Waits for the migration lock by trying it again and again rather than blocking in pg_advisory_lock: a waiter blocked
 * there sits in an open statement, and CREATE INDEX CONCURRENTLY in the holder waits for every such statement to end.
 */
async function lock(sql: postgres.Sql): Promise<void> {
  for (;;) {
    const [{ locked }] = await sql<{ locked: boolean }[]>`select pg_try_advisory_lock(${MIGRATION_LOCK_ID}) as locked`;
    if (locked) return;
    await new Promise((resolve) => setTimeout(resolve, LOCK_POLL_MS));
  }
}

async function record(sql: postgres.Sql | postgres.TransactionSql, migration: Migration): Promise<void> {
  await sql`insert into drizzle.__drizzle_migrations (hash, created_at) values (${migration.hash}, ${migration.when})`;
}

const CONCURRENT_INDEX = /^\s*create\s+(?:unique\s+)?index\s+concurrently\s+(?:if\s+not\s+exists\s+)?"?([a-z0-9_]+)"?/i;

/** An interrupted CREATE INDEX CONCURRENTLY leaves an INVALID index that IF NOT EXISTS would keep: drop it to build again. */
async function dropInvalidIndex(sql: postgres.Sql, statement: string): Promise<void> {
  const name = CONCURRENT_INDEX.exec(withoutLineComments(statement))?.[1];
  if (!name) return;
  const [invalid] = await sql`
    select 1 from pg_index i join pg_class c on c.oid = i.indexrelid
    where c.relname = ${name} and c.relnamespace = current_schema()::regnamespace and not i.indisvalid`;
  if (invalid) await sql.unsafe(`drop index concurrently if exists "${name}"`);
}

function withoutLineComments(statement: string): string {
  return statement
    .split('\n')
    .filter((line) => !line.trimStart().startsWith('--'))
    .join('\n');
}
