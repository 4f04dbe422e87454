import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type postgres from 'postgres';

/**
 * The SQL routines (functions, trigger functions and their triggers): each defined once, in a file of
 * `drizzle/routines/` that says what it is now, rather than copied whole into a new migration for every change. The
 * migrate step applies them after the numbered migrations (runMigrations, under its lock), in the order of
 * `order.txt`, each file in a transaction of its own, and records each file's sha256 in `drizzle.__routines`: a file
 * whose text is unchanged is skipped, a changed or new one is applied. Every file must be safe to run again
 * (`CREATE OR REPLACE`, `DROP … IF EXISTS`). Whenever a numbered migration was applied, every routine is applied again,
 * so a migration that replaced or dropped one (an old migration on a fresh database, a table made again) never
 * leaves the database unlike the files.
 */
export const ROUTINES_DIRECTORY = 'routines';
const ORDER_FILE = 'order.txt';

export interface Routine {
  /** The file's name without `.sql`. */
  name: string;
  /** sha256 of the file. */
  hash: string;
  text: string;
}

/** The routines of `<migrations folder>/routines`, in their order; none when the folder has no such directory. */
export function readRoutines(migrationsFolder: string): Routine[] {
  const dir = path.join(migrationsFolder, ROUTINES_DIRECTORY);
  if (!fs.existsSync(dir)) return [];
  const order = fs
    .readFileSync(path.join(dir, ORDER_FILE), 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('#'));
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.sql')).map((f) => f.slice(0, -'.sql'.length));
  const unlisted = files.filter((name) => !order.includes(name));
  const missing = order.filter((name) => !files.includes(name));
  if (unlisted.length > 0 || missing.length > 0 || new Set(order).size !== order.length) {
    throw new Error(`${path.join(dir, ORDER_FILE)} must name each routine file once: unlisted ${JSON.stringify(unlisted)}, missing ${JSON.stringify(missing)}`);
  }
  return order.map((name) => {
    const text = fs.readFileSync(path.join(dir, `${name}.sql`), 'utf8');
    return { name, hash: createHash('sha256').update(text).digest('hex'), text };
  });
}

/**
 * Applies the routines whose file changed since it was last applied (all of them when `all`), each in a transaction of
 * its own, and returns their names. The caller holds the migration lock.
 */
export async function applyRoutines(sql: postgres.Sql, routines: Routine[], { all = false }: { all?: boolean } = {}): Promise<string[]> {
  await sql`create table if not exists drizzle.__routines (name text primary key, hash text not null, applied_at timestamptz not null default now())`;
  const recorded = new Map((await sql<{ name: string; hash: string }[]>`select name, hash from drizzle.__routines`).map((r) => [r.name, r.hash]));
  const applied: string[] = [];
  for (const routine of routines) {
    if (!all && recorded.get(routine.name) === routine.hash) continue;
    await sql.begin(async (tx) => {
      // One simple-protocol query: the file's statements in order, in this transaction.
      await tx.unsafe(routine.text).simple();
      await tx`
        insert into drizzle.__routines (name, hash) values (${routine.name}, ${routine.hash})
        on conflict (name) do update set hash = excluded.hash, applied_at = now()`;
    });
    applied.push(routine.name);
  }
  // A routine whose file is gone: its objects are a migration's to drop; only the record goes.
  const gone = [...recorded.keys()].filter((name) => !routines.some((r) => r.name === name));
  if (gone.length > 0) await sql`delete from drizzle.__routines where name = any(${gone})`;
  return applied;
}
