import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { msToTs } from '@temporalio/common';
import { drizzle } from 'drizzle-orm/postgres-js';
import { migrate as drizzleMigrate } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { MIGRATIONS_FOLDER, NO_TRANSACTION_MARKER, readMigrations, runMigrations } from '../src/db/migrate';
import { readRoutines } from '../src/db/routines';
import { freePort } from '../scripts/lib/ports';
import { eventually, testEnv } from './harness';
import { spawnTsProcess } from './processes';

/**
 * The migrate step's runner (src/db/migrate.ts) against real Postgres: a fresh database, one drizzle's own migrator
 * left off at an earlier migration, a CREATE INDEX CONCURRENTLY migration interrupted and taken up again, and two
 * runners at once.
 */
const databases: string[] = [];
const admin = () => postgres(testEnv().databaseUrl, { max: 1, onnotice: () => {} });

async function freshDatabase(): Promise<string> {
  const name = `vg_migrate_${randomBytes(5).toString('hex')}`;
  const sql = admin();
  await sql.unsafe(`create database ${name}`);
  await sql.end();
  databases.push(name);
  const url = new URL(testEnv().databaseUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

/** A migrations folder of the given files (name → SQL), in that order. */
function folderOf(files: Array<[string, string]>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-migrations-'));
  fs.mkdirSync(path.join(dir, 'meta'));
  files.forEach(([tag, text]) => fs.writeFileSync(path.join(dir, `${tag}.sql`), text));
  const entries = files.map(([tag], idx) => ({ idx, version: '7', when: 1_700_000_000_000 + idx, tag, breakpoints: true }));
  fs.writeFileSync(path.join(dir, 'meta/_journal.json'), JSON.stringify({ version: '7', dialect: 'postgresql', entries }));
  return dir;
}

async function withSql<T>(url: string, run: (sql: postgres.Sql) => Promise<T>): Promise<T> {
  const sql = postgres(url, { max: 1, onnotice: () => {} });
  try {
    return await run(sql);
  } finally {
    await sql.end();
  }
}

const recorded = (url: string) =>
  withSql(url, (sql) => sql<{ hash: string; created_at: string }[]>`select hash, created_at from drizzle.__drizzle_migrations order by id`).then((rows) =>
    rows.map((r) => ({ hash: r.hash, when: Number(r.created_at) })),
  );

const indexState = (url: string, name: string) =>
  withSql(url, async (sql) => {
    const [row] = await sql<{ valid: boolean }[]>`select i.indisvalid as valid from pg_index i join pg_class c on c.oid = i.indexrelid where c.relname = ${name}`;
    return row ? (row.valid ? 'valid' : 'invalid') : 'missing';
  });

/** The numbered migrations of the project alone, as a database of an earlier build was migrated: no routines. */
function migrationsOnly(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-migrations-'));
  fs.mkdirSync(path.join(dir, 'meta'));
  fs.copyFileSync(path.join(MIGRATIONS_FOLDER, 'meta/_journal.json'), path.join(dir, 'meta/_journal.json'));
  for (const m of readMigrations()) fs.copyFileSync(path.join(MIGRATIONS_FOLDER, `${m.tag}.sql`), path.join(dir, `${m.tag}.sql`));
  return dir;
}

/** A migration added to a folder of folderOf, after its others. */
function addMigration(folder: string, tag: string, text: string): void {
  const file = path.join(folder, 'meta/_journal.json');
  const journal = JSON.parse(fs.readFileSync(file, 'utf8')) as { entries: Array<{ idx: number; when: number; tag: string }> };
  const last = journal.entries[journal.entries.length - 1];
  journal.entries.push({ ...last, idx: last.idx + 1, when: last.when + 1, tag });
  fs.writeFileSync(file, JSON.stringify(journal));
  fs.writeFileSync(path.join(folder, `${tag}.sql`), text);
}

/** What the database holds of code: each function's definition, each trigger's, each composite type's fields. */
const definitions = (url: string) =>
  withSql(url, async (sql) => ({
    functions: (
      await sql<{ def: string }[]>`
        select pg_get_functiondef(p.oid) as def from pg_proc p
        where p.pronamespace = 'public'::regnamespace and p.prokind in ('f', 'p')
        order by p.proname, pg_get_function_identity_arguments(p.oid)`
    ).map((r) => r.def),
    triggers: (
      await sql<{ def: string }[]>`select pg_get_triggerdef(t.oid) as def from pg_trigger t where not t.tgisinternal order by t.tgrelid::regclass::text, t.tgname`
    ).map((r) => r.def),
    types: (
      await sql<{ name: string; fields: string }[]>`
        select t.typname as name, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod), ', ' order by a.attnum) as fields
        from pg_type t join pg_class c on c.oid = t.typrelid and c.relkind = 'c' join pg_attribute a on a.attrelid = c.oid and a.attnum > 0
        where t.typnamespace = 'public'::regnamespace group by t.typname order by t.typname`
    ).map((r) => `${r.name}(${r.fields})`),
  }));

afterAll(async () => {
  const sql = admin();
  for (const name of databases) await sql.unsafe(`drop database if exists ${name} with (force)`);
  await sql.end();
});

describe('the migrate step', () => {
  const all = readMigrations();
  const routines = readRoutines(MIGRATIONS_FOLDER);

  test('migrates a fresh database, recording every migration as drizzle does; a second run finds nothing to do', async () => {
    const url = await freshDatabase();
    expect(await runMigrations(url)).toEqual({ migrations: all.map((m) => m.tag), routines: routines.map((r) => r.name) });
    expect(await recorded(url)).toEqual(all.map((m) => ({ hash: m.hash, when: m.when })));
    // The retention indexes were built outside a transaction (CONCURRENTLY) and are usable.
    expect(all.find((m) => m.tag === '0017_retention_indexes')?.transactional).toBe(false);
    for (const name of ['idempotency_keys_job_idx', 'credit_ledger_settled_idx', 'notifications_created_idx', 'webhook_deliveries_finished_idx']) {
      expect(await indexState(url, name)).toBe('valid');
    }
    expect(await runMigrations(url)).toEqual({ migrations: [], routines: [] });
    expect(await recorded(url)).toHaveLength(all.length);
  });

  test("carries on from a database migrated by drizzle's own migrator", async () => {
    const url = await freshDatabase();
    const upTo = all.findIndex((m) => m.tag === '0015_drop_take_token') + 1;
    // The folder as it was at 0015, applied by the runner the project used before.
    const old = folderOf(all.slice(0, upTo).map((m) => [m.tag, fs.readFileSync(path.join(MIGRATIONS_FOLDER, `${m.tag}.sql`), 'utf8')]));
    const journal = JSON.parse(fs.readFileSync(path.join(old, 'meta/_journal.json'), 'utf8')) as { entries: Array<{ when: number }> };
    journal.entries.forEach((entry, i) => (entry.when = all[i].when));
    fs.writeFileSync(path.join(old, 'meta/_journal.json'), JSON.stringify(journal));
    await withSql(url, (sql) => drizzleMigrate(drizzle(sql), { migrationsFolder: old }));
    const before = await recorded(url);
    expect(before).toHaveLength(upTo);

    expect((await runMigrations(url)).migrations).toEqual(all.slice(upTo).map((m) => m.tag));
    expect(await recorded(url)).toEqual(all.map((m) => ({ hash: m.hash, when: m.when })));
  });

  test('a database migrated by the old migrations alone ends, once its routines are applied, with the code of a fresh one', async () => {
    const fresh = await freshDatabase();
    await runMigrations(fresh);
    const upgraded = await freshDatabase();
    expect(await runMigrations(upgraded, { folder: migrationsOnly() })).toEqual({ migrations: all.map((m) => m.tag), routines: [] });
    const before = await definitions(upgraded);
    // What the migrations alone leave: the admission of 17 arguments (drizzle/0013), which the routines replace.
    expect(before.functions.filter((f) => f.includes('FUNCTION public.vg_admit_submission(p_user_id text'))).toHaveLength(1);
    expect(before).not.toEqual(await definitions(fresh));

    expect(await runMigrations(upgraded)).toEqual({ migrations: [], routines: routines.map((r) => r.name) });
    const after = await definitions(upgraded);
    expect(after).toEqual(await definitions(fresh));
    expect(after.functions.filter((f) => f.includes('FUNCTION public.vg_admit_submission('))).toEqual([expect.stringContaining('vg_admit_submission(p_claim jsonb')]);
    expect(after.triggers).toHaveLength(4); // the change feed, the two counts, the batch tally
  });

  test('a routine is applied again when its file changes, and after any new migration; a failed one is not recorded', async () => {
    const url = await freshDatabase();
    const folder = folderOf([['0000_table', 'CREATE TABLE "things" ("n" integer NOT NULL);']]);
    fs.mkdirSync(path.join(folder, 'routines'));
    const routine = (name: string, text: string) => fs.writeFileSync(path.join(folder, 'routines', `${name}.sql`), text);
    fs.writeFileSync(path.join(folder, 'routines/order.txt'), '# first the count\nthings_count\nthings_double\n');
    routine('things_count', 'CREATE OR REPLACE FUNCTION things_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) FROM things $$;');
    routine('things_double', 'CREATE OR REPLACE FUNCTION things_double() RETURNS bigint LANGUAGE sql AS $$ SELECT 2 * things_count() $$;');
    const value = (fn: string) => withSql(url, async (sql) => Number((await sql.unsafe<{ v: string }[]>(`select ${fn}() as v`))[0].v));

    expect(await runMigrations(url, { folder })).toEqual({ migrations: ['0000_table'], routines: ['things_count', 'things_double'] });
    expect(await runMigrations(url, { folder })).toEqual({ migrations: [], routines: [] });

    routine('things_count', 'CREATE OR REPLACE FUNCTION things_count() RETURNS bigint LANGUAGE sql AS $$ SELECT count(*) + 100 FROM things $$;');
    expect(await runMigrations(url, { folder })).toEqual({ migrations: [], routines: ['things_count'] });
    expect(await value('things_double')).toBe(200);

    // A migration that drops what a routine made (a table made again, say): every routine is applied again after it.
    addMigration(folder, '0001_drop_double', 'DROP FUNCTION things_double();');
    expect(await runMigrations(url, { folder })).toEqual({ migrations: ['0001_drop_double'], routines: ['things_count', 'things_double'] });
    expect(await value('things_double')).toBe(200);

    // A file that fails leaves nothing of itself and is not recorded: the next run applies it again.
    routine('things_double', 'CREATE OR REPLACE FUNCTION things_double() RETURNS bigint LANGUAGE sql AS $$ SELECT 3 * things_count() $$;\nSELECT 1 / 0;');
    await expect(runMigrations(url, { folder })).rejects.toThrow(/division by zero/);
    expect(await value('things_double')).toBe(200);
    routine('things_double', 'CREATE OR REPLACE FUNCTION things_double() RETURNS bigint LANGUAGE sql AS $$ SELECT 3 * things_count() $$;');
    expect(await runMigrations(url, { folder })).toEqual({ migrations: [], routines: ['things_double'] });
    expect(await value('things_double')).toBe(300);

    // Every file must be in the order, once.
    routine('stray', 'SELECT 1;');
    await expect(runMigrations(url, { folder })).rejects.toThrow(/must name each routine file once: unlisted \["stray"\]/);
  });

  test('runs a no-transaction migration statement by statement, and rebuilds an index whose concurrent build was interrupted', async () => {
    const url = await freshDatabase();
    const folder = folderOf([
      ['0000_table', 'CREATE TABLE "things" ("n" integer NOT NULL);\n--> statement-breakpoint\nINSERT INTO "things" VALUES (1), (2), (2);'],
      [
        '0001_unique_things',
        `${NO_TRANSACTION_MARKER}\n-- a comment before the statement\nCREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS "things_n_idx" ON "things" ("n");\n--> statement-breakpoint\nCREATE INDEX CONCURRENTLY IF NOT EXISTS "things_n_plain_idx" ON "things" ("n");`,
      ],
    ]);
    // The duplicate makes the build fail halfway, as a killed build would: an INVALID index remains, nothing is recorded.
    await expect(runMigrations(url, { folder })).rejects.toThrow(/could not create unique index/);
    expect(await indexState(url, 'things_n_idx')).toBe('invalid');
    expect(await recorded(url)).toHaveLength(1);

    await withSql(url, (sql) => sql`delete from things where ctid = (select max(ctid) from things where n = 2)`);
    expect(await runMigrations(url, { folder })).toEqual({ migrations: ['0001_unique_things'], routines: [] });
    expect(await indexState(url, 'things_n_idx')).toBe('valid');
    expect(await indexState(url, 'things_n_plain_idx')).toBe('valid');
    await withSql(url, async (sql) => {
      await expect(sql`insert into things values (1)`).rejects.toThrow(/duplicate key/);
    });
  });

  test('two runners at once: one applies each migration once, the other waits and finds nothing left', async () => {
    const url = await freshDatabase();
    const folder = folderOf([
      ['0000_table', 'CREATE TABLE "things" ("n" integer NOT NULL);\n--> statement-breakpoint\nINSERT INTO "things" SELECT generate_series(1, 200000);'],
      ['0001_index', `${NO_TRANSACTION_MARKER}\nCREATE INDEX CONCURRENTLY IF NOT EXISTS "things_n_idx" ON "things" ("n");`],
      ['0002_more', 'ALTER TABLE "things" ADD COLUMN "m" integer;'],
    ]);
    const runs = await Promise.all([runMigrations(url, { folder }), runMigrations(url, { folder }), runMigrations(url, { folder })]);
    expect(runs.flatMap((r) => r.migrations).sort()).toEqual(['0000_table', '0001_index', '0002_more']);
    expect(await recorded(url)).toHaveLength(3);
    expect(await indexState(url, 'things_n_idx')).toBe('valid');
  });

  /** `npm run migrate` as a process of its own, as the topology and docker-compose.yml run it. */
  const migrateStep = async (env: Record<string, string>) => {
    const child = spawnTsProcess({ name: `migrate-step-${randomBytes(3).toString('hex')}`, script: 'src/migrate.ts', env: { LOG_LEVEL: 'info', ...env } });
    return { exit: await child.exited, output: child.output() };
  };

  test("`npm run migrate` migrates, sets the Temporal namespace's retention on the real server, and exits", async () => {
    const url = await freshDatabase();
    const namespace = `vg-retention-${randomBytes(4).toString('hex')}`;
    const connection = await Connection.connect({ address: testEnv().temporalAddress });
    try {
      await connection.workflowService.registerNamespace({ namespace, workflowExecutionRetentionPeriod: msToTs('1 day') });
      const retentionDays = async () => {
        const { config } = await connection.workflowService.describeNamespace({ namespace });
        return Number(config?.workflowExecutionRetentionTtl?.seconds?.toString()) / 86_400;
      };
      expect(await eventually(() => retentionDays().catch(() => undefined), { what: 'the new namespace' })).toBe(1);

      const { exit, output } = await migrateStep({ DATABASE_URL: url, TEMPORAL_ADDRESS: testEnv().temporalAddress, TEMPORAL_NAMESPACE: namespace, TEMPORAL_RETENTION_DAYS: '3' });
      expect([exit.code, output]).toEqual([0, expect.stringContaining('namespace retention set')]);
      expect(await retentionDays()).toBe(3);
      expect(await recorded(url)).toHaveLength(all.length);

      // Run again: nothing left to do in either place.
      const again = await migrateStep({ DATABASE_URL: url, TEMPORAL_ADDRESS: testEnv().temporalAddress, TEMPORAL_NAMESPACE: namespace, TEMPORAL_RETENTION_DAYS: '3' });
      expect([again.exit.code, again.output]).toEqual([0, expect.stringContaining('namespace retention already set')]);
      expect(again.output).toContain('no migration pending');
    } finally {
      await connection.close();
    }
  });

  test('a Temporal that does not answer holds up nothing: the database is migrated, the retention left for the next run', async () => {
    const url = await freshDatabase();
    const { exit, output } = await migrateStep({ DATABASE_URL: url, TEMPORAL_ADDRESS: `127.0.0.1:${await freePort()}` });
    expect([exit.code, output]).toEqual([0, expect.stringContaining('Temporal did not answer')]);
    expect(await recorded(url)).toHaveLength(all.length);
  });

  test('the API does not migrate on boot', async () => {
    const url = await freshDatabase();
    const port = await freePort();
    const api = spawnTsProcess({ name: 'api-unmigrated', script: 'src/api/main.ts', env: { DATABASE_URL: url, PORT: String(port), TEMPORAL_ADDRESS: testEnv().temporalAddress, ADMIN_API_KEY: 'test-admin-key-0123456789-0123456789' } });
    try {
      await eventually(() => fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok || undefined, () => undefined), { what: 'the API to listen' });
      const [{ migrated }] = await withSql(url, (sql) => sql<{ migrated: boolean }[]>`select to_regclass('drizzle.__drizzle_migrations') is not null as migrated`);
      expect(migrated).toBe(false);
    } finally {
      await api.stop();
    }
  });
});
