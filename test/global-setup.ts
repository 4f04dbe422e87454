import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { freePort } from '../scripts/lib/ports';
import { startTemporalDevServer } from '../scripts/lib/temporal-dev-server';
import { startEmbeddedPostgres } from '../scripts/lib/embedded-postgres';
import { startMailpit } from '../scripts/lib/mailpit';
import { runMigrations } from '../src/db/migrate';
import { createLogger } from '../src/lib/logger';
import { buildWorkflowBundles, prebuiltBundle } from '../src/workflow-bundle';

/**
 * One real Temporal dev server (fairness on, one partition), one fresh Postgres database and one Mailpit (an SMTP server
 * whose API shows what arrived) per test run, plus the workflow bundle built once. Test files read where they are from TEST_* variables.
 */
export const ARTIFACTS = path.resolve(__dirname, 'artifacts');

export default async function globalSetup(): Promise<void> {
  const stoppers: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const stop of stoppers.reverse()) await stop().catch((err) => console.error(err));
  };
  (globalThis as { __videogenStop?: () => Promise<void> }).__videogenStop = stopAll;
  try {
    await setUp(stoppers);
  } catch (err) {
    await stopAll(); // a failed setup must not leave a Temporal server or Postgres behind
    throw err;
  }
}

async function setUp(stoppers: Array<() => Promise<void>>): Promise<void> {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const logger = createLogger('test-setup', 'warn');

  const metricsPort = await freePort();
  const temporal = await startTemporalDevServer({
    port: await freePort(),
    logFile: path.join(ARTIFACTS, 'temporal.log'),
    singlePartition: true,
    // The benchmark reads the server's own `action` counter (engine cost per job).
    metricsPort,
  });
  stoppers.push(temporal.stop);

  let databaseUrl: string;
  if (process.env.DATABASE_URL) {
    // A real server was given: a fresh database on it for this run, dropped at the end.
    const name = `vg_test_${process.pid}_${Date.now()}`;
    const admin = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} });
    await admin.unsafe(`create database ${name}`);
    await admin.end();
    const url = new URL(process.env.DATABASE_URL);
    url.pathname = `/${name}`;
    databaseUrl = url.toString();
    stoppers.push(async () => {
      const sql = postgres(process.env.DATABASE_URL!, { max: 1, onnotice: () => {} });
      await sql.unsafe(`drop database if exists ${name} with (force)`);
      await sql.end();
    });
  } else {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-test-pg-'));
    const pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), logger });
    databaseUrl = pg.url;
    stoppers.push(async () => {
      await pg.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    });
  }
  await runMigrations(databaseUrl);

  // Mail the stacks send goes here; tests read it through Mailpit's API. Its store is a temporary file it deletes.
  const mailpit = await startMailpit({ smtpPort: await freePort(), uiPort: await freePort(), logFile: path.join(ARTIFACTS, 'mailpit.log') });
  stoppers.push(mailpit.stop);

  // Built as `npm run build` builds (both entries and their manifest), in a folder per run: concurrent runs (and the
  // benchmarks, which reuse this setup) must not read each other's half-written bundle. Stacks load the plain entry;
  // worker processes the tests spawn load the folder (test/processes.ts), as a deployed worker does.
  const bundleDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-bundle-'));
  stoppers.push(async () => fs.rmSync(bundleDir, { recursive: true, force: true }));
  await buildWorkflowBundles(bundleDir);
  const built = prebuiltBundle('plain', bundleDir);
  if (!('codePath' in built)) throw new Error(built.missing);
  const bundlePath = built.codePath;

  process.env.TEST_TEMPORAL_ADDRESS = temporal.address;
  process.env.TEST_TEMPORAL_METRICS_URL = `http://127.0.0.1:${metricsPort}/metrics`;
  process.env.TEST_DATABASE_URL = databaseUrl;
  process.env.TEST_WORKFLOW_BUNDLE = bundlePath;
  process.env.TEST_WORKFLOW_BUNDLE_DIR = bundleDir;
  process.env.TEST_SMTP_URL = mailpit.smtpUrl;
  process.env.TEST_MAILPIT_URL = mailpit.uiUrl;
}
