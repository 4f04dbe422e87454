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

afterAll(async () => {
  const sql = admin();
  for (const name of databases) await sql.unsafe(`drop database if exists ${name} with (force)`);
  await sql.end();
});

describe('the migrate step', () => {
  const all = readMigrations();

  test('migrates a fresh database, recording every migration as drizzle does; a second run finds nothing to do', async () => {
    const url = await freshDatabase();
    expect(await runMigrations(url)).toEqual(all.map((m) => m.tag));
    expect(await recorded(url)).toEqual(all.map((m) => ({ hash: m.hash, when: m.when })));
    // The retention indexes were built outside a transaction (CONCURRENTLY) and are usable.
    expect(all.find((m) => m.tag === '0017_retention_indexes')?.transactional).toBe(false);
    for (const name of ['idempotency_keys_job_idx', 'credit_ledger_settled_idx', 'notifications_created_idx', 'webhook_deliveries_finished_idx']) {
      expect(await indexState(url, name)).toBe('valid');
    }
    expect(await runMigrations(url)).toEqual([]);
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

    expect(await runMigrations(url)).toEqual(all.slice(upTo).map((m) => m.tag));
    expect(await recorded(url)).toEqual(all.map((m) => ({ hash: m.hash, when: m.when })));
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
    expect(await runMigrations(url, { folder })).toEqual(['0001_unique_things']);
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
    expect(runs.flat().sort()).toEqual(['0000_table', '0001_index', '0002_more']);
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
