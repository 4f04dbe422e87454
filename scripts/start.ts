/**
 * `npm start`: the whole service on one machine, in the foreground. Starts the Temporal dev server (unless
 * TEMPORAL_ADDRESS is set), Postgres (embedded unless DATABASE_URL is set), applies migrations, creates the demo user on
 * first start, then runs the backend simulator, the worker (generation + GPU dispatcher) and the API as child processes.
 * Ctrl-C stops everything.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { createUser, findUserByApiKey } from '../src/api/auth';
import { loadConfig } from '../src/config';
import { createDatabase } from '../src/db/client';
import { startEmbeddedPostgres } from '../src/db/embedded';
import { createLogger } from '../src/lib/logger';
import { migrate } from '../src/migrate';
import { isPortFree } from './lib/ports';
import { serviceNodeOptions } from '../src/lib/node-options';
import { startTemporalDevServer, waitForTemporal } from './lib/temporal-dev-server';

const ROOT = path.resolve(__dirname, '..');
const TSX = path.join(ROOT, 'node_modules/.bin/tsx');
const TEMPORAL_PORT = 7233;
const TEMPORAL_UI_PORT = 8233;

type Stopper = { name: string; stop: () => Promise<void> };

async function main(): Promise<void> {
  const startedAt = Date.now();
  const config = loadConfig();
  const dataDir = path.resolve(ROOT, config.database.dataDir);
  const logDir = path.join(dataDir, 'logs');
  fs.mkdirSync(logDir, { recursive: true });
  const logger = createLogger('start', 'warn');
  const stoppers: Stopper[] = [];
  let stopping = false;

  const stopAll = async (code: number) => {
    if (stopping) return;
    stopping = true;
    say('\nstopping…');
    for (const { name, stop } of stoppers.reverse()) {
      await stop().catch((err: unknown) => say(`  ${name}: ${String(err)}`));
      say(`  ${name} stopped`);
    }
    process.exit(code);
  };
  process.on('SIGINT', () => void stopAll(0));
  process.on('SIGTERM', () => void stopAll(0));

  try {
    // Temporal
    let temporalAddress = config.temporal.address;
    let temporalUi: string | undefined;
    if (config.temporal.external) {
      step(`Temporal: using ${temporalAddress}`);
      await waitForTemporal(temporalAddress, 30_000);
    } else {
      if (!(await isPortFree(TEMPORAL_PORT))) {
        throw new Error(`port ${TEMPORAL_PORT} is taken: stop the other Temporal server, or set TEMPORAL_ADDRESS to use it`);
      }
      step('Temporal: starting the dev server (fairness on; state in .data/temporal.db)');
      const temporal = await startTemporalDevServer({
        port: TEMPORAL_PORT,
        uiPort: TEMPORAL_UI_PORT,
        dbFile: path.join(dataDir, 'temporal.db'),
        logFile: path.join(logDir, 'temporal.log'),
      });
      stoppers.push({ name: 'temporal', stop: temporal.stop });
      temporalAddress = temporal.address;
      temporalUi = temporal.uiUrl;
    }

    // Postgres
    let databaseUrl = config.database.url;
    if (databaseUrl) {
      step('Postgres: using DATABASE_URL');
    } else {
      step(`Postgres: starting embedded Postgres (data in ${path.relative(ROOT, dataDir)}/postgres, port ${config.database.embeddedPort})`);
      const pg = await startEmbeddedPostgres({ dataDir, port: config.database.embeddedPort, logger });
      stoppers.push({ name: 'postgres', stop: pg.stop });
      databaseUrl = pg.url;
    }
    await migrate({ databaseUrl, temporal: { ...config.temporal, address: temporalAddress }, logger });
    const demoKey = await ensureDemoUser(databaseUrl, path.join(dataDir, 'demo-api-key'), config.generation.creditGrants.pro ?? 0);
    const adminApiKey = config.api.adminApiKey ?? `vgadmin_${randomBytes(24).toString('base64url')}`;

    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      TEMPORAL_ADDRESS: temporalAddress,
      DATABASE_URL: databaseUrl,
      ADMIN_API_KEY: adminApiKey,
      BACKEND_URL: config.backend.url,
      NODE_OPTIONS: serviceNodeOptions(process.env.NODE_OPTIONS),
    };
    const children: Array<[string, string]> = [
      ['simulator', 'src/simulator/main.ts'],
      ['worker', 'src/worker.ts'],
      ['api', 'src/api/main.ts'],
    ];
    for (const [name, entry] of children) {
      step(`${name}: starting (log: ${path.relative(ROOT, path.join(logDir, `${name}.log`))})`);
      const child = spawnChild(name, entry, env, logDir, () => void stopAll(1));
      stoppers.push({ name, stop: () => stopChild(child) });
    }
    await waitForHttp(`${config.backend.url}/healthz`, 30_000);
    await waitForHttp(`http://127.0.0.1:${config.api.port}/healthz`, 30_000);
    await waitForPoller(temporalAddress, config.temporal.namespace, config.worker.generationTaskQueue, 60_000);

    const api = `http://127.0.0.1:${config.api.port}`;
    say(`
Ready in ${((Date.now() - startedAt) / 1000).toFixed(1)} s.

  API           ${api}
  Temporal UI   ${temporalUi ?? '(external Temporal: its own UI)'}
  Temporal      ${temporalAddress}
  Simulator     ${config.backend.url}
  Logs          ${path.relative(ROOT, logDir)}/

  Demo API key  ${demoKey}
  Admin key     ${adminApiKey}

Try it:
  curl -s -X POST ${api}/v1/generations -H "Authorization: Bearer ${demoKey}" -H "Content-Type: application/json" -H "Idempotency-Key: $(date +%s)" -d '{"prompt":"a red fox running through snow"}'
  curl -s ${api}/v1/generations -H "Authorization: Bearer ${demoKey}"

Ctrl-C stops everything.`);
  } catch (err) {
    say(`\nstart failed: ${err instanceof Error ? err.message : String(err)}`);
    await stopAll(1);
  }
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function step(line: string): void {
  say(`• ${line}`);
}

/** The demo user's key is kept in the data folder (git-ignored) so every start can print it; the database holds only its hash. */
async function ensureDemoUser(databaseUrl: string, keyFile: string, credits: number): Promise<string> {
  const { db, close } = createDatabase(databaseUrl, { max: 1 });
  try {
    if (fs.existsSync(keyFile)) {
      const key = fs.readFileSync(keyFile, 'utf8').trim();
      if (await findUserByApiKey(db, key)) return key;
    }
    const { apiKey } = await createUser(db, { name: 'demo', tier: 'pro', credits });
    fs.writeFileSync(keyFile, `${apiKey}\n`, { mode: 0o600 });
    step('demo user created (tier pro)');
    return apiKey;
  } finally {
    await close();
  }
}

function spawnChild(name: string, entry: string, env: Record<string, string>, logDir: string, onCrash: () => void): ChildProcess {
  const log = fs.openSync(path.join(logDir, `${name}.log`), 'a');
  // Own process group: Ctrl-C reaches this script only, which then stops the children in order.
  const child = spawn(TSX, [entry], { cwd: ROOT, env, stdio: ['ignore', log, log], detached: true });
  fs.closeSync(log);
  child.once('exit', (code, signal) => {
    if ((child as { stopping?: boolean }).stopping) return;
    say(`\n${name} exited unexpectedly (code ${code}, signal ${signal}); last lines of its log:`);
    const lines = fs.readFileSync(path.join(logDir, `${name}.log`), 'utf8').trimEnd().split('\n').slice(-15);
    for (const line of lines) say(`  ${line}`);
    onCrash();
  });
  return child;
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  (child as { stopping?: boolean }).stopping = true;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(timer);
}

async function waitForHttp(url: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await fetch(url).then((r) => r.ok, () => false);
    if (ok) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms`);
}

/** The worker is ready when Temporal sees it polling the generation task queue. */
async function waitForPoller(address: string, namespace: string, taskQueue: string, timeoutMs: number): Promise<void> {
  const connection = await Connection.connect({ address });
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const { pollers } = await connection.workflowService.describeTaskQueue({ namespace, taskQueue: { name: taskQueue }, taskQueueType: 1 });
      if (pollers && pollers.length > 0) return;
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`no worker polled ${taskQueue} within ${timeoutMs} ms`);
  } finally {
    await connection.close();
  }
}

void main();
