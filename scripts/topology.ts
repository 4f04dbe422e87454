/**
 * `npm run topology:test`: the production topology of docker-compose.yml, without docker, on this machine's Postgres.
 *
 *   Postgres (DATABASE_URL's server, else postgres://postgres@127.0.0.1:5432/postgres)
 *     ├─ fresh databases for this run: Temporal's, Temporal visibility's, the app's (dropped at the end)
 *   Temporal server 1.29 (go.temporal.io/server) on them, fairness on (deploy/temporal/dynamicconfig.yaml), free ports
 *   the migrate step (src/migrate.ts: migrations, the namespace's retention), then
 *   backend simulator · API #1 · API #2 · worker #1 · worker #2 (WORKER_ROLE=all: generation worker + GPU dispatcher)
 *
 * then runs test/topology/*.e2e.ts against it (jest.topology.config.js) and stops everything, also on failure or
 * Ctrl-C. Logs and the rendered server config go to test/artifacts/topology/.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { loadConfig } from '../src/config';
import { spawnTsProcess, type SpawnedProcess } from '../test/processes';
import { freePort } from './lib/ports';
import { temporalBinary } from './lib/temporal-dev-server';
import { checkPostgres, createDatabases, databaseUrl, DEFAULT_POSTGRES_URL, dropDatabases, postgresServer } from './lib/topology-postgres';
import { provisionNamespace, setupSchema, startTemporalServer, tail, temporalServerTools } from './lib/topology-temporal';

const ROOT = path.resolve(__dirname, '..');
const RUN_DIR = path.join(ROOT, 'test/artifacts/topology');
const NAMESPACE = 'default';
const WORKERS = 2;
const APIS = 2;

/** `done` is what is printed once it has stopped. */
type Stopper = { name: string; stop: () => Promise<void>; done?: string };

async function main(): Promise<number> {
  const startedAt = Date.now();
  const stoppers: Stopper[] = [];
  let stopping: Promise<void> | undefined;
  const stopAll = () =>
    (stopping ??= (async () => {
      for (const { name, stop, done } of stoppers.reverse()) {
        await stop().then(
          () => step(done ?? `${name} stopped`),
          (err: unknown) => say(`  ${name}: ${err instanceof Error ? err.message : String(err)}`),
        );
      }
    })());
  // `on`, not `once`: a second signal (tsx relays Ctrl-C once more; an impatient user) must not kill the script halfway
  // through stopping, which would leave the server running and the databases behind.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.on(signal, () => {
      if (stopping) return;
      say(`\n${signal}: stopping the topology…`);
      void stopAll().then(() => process.exit(130));
    });
  }

  try {
    fs.rmSync(RUN_DIR, { recursive: true, force: true });
    fs.mkdirSync(RUN_DIR, { recursive: true });

    // Binaries first: a missing one is built (minutes, once) before any database exists.
    const tools = temporalServerTools();
    const cli = temporalBinary();

    const pg = postgresServer(loadConfig().database.url ?? DEFAULT_POSTGRES_URL);
    const version = await checkPostgres(pg);
    const suffix = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
    const db = { temporal: `vg_topo_temporal_${suffix}`, visibility: `vg_topo_visibility_${suffix}`, app: `vg_topo_app_${suffix}` };
    await createDatabases(pg, Object.values(db));
    stoppers.push({ name: 'databases', stop: () => dropDatabases(pg, Object.values(db)), done: `dropped ${Object.values(db).join(', ')}` });
    step(`Postgres ${version} at ${pg.host}:${pg.port}: created ${Object.values(db).join(', ')}`);

    await Promise.all([setupSchema(tools, pg, db.temporal, 'temporal'), setupSchema(tools, pg, db.visibility, 'visibility')]);
    step('Temporal schemas set up (temporal-sql-tool setup-schema -v 0.0, update-schema to the newest)');

    const server = await startTemporalServer({ tools, pg, database: db.temporal, visibilityDatabase: db.visibility, runDir: RUN_DIR });
    stoppers.push({ name: 'Temporal server', stop: server.stop });
    step(`Temporal server ${server.address} (pid ${server.pid}; config ${rel(server.configFile)}; dynamic config deploy/temporal/dynamicconfig.yaml)`);
    await provisionNamespace({ cli, address: server.address, namespace: NAMESPACE });
    step(`namespace ${NAMESPACE} with search attributes VgUserId, VgTier, VgStatus, VgBackendJobId`);

    // The app: one environment for all, as docker-compose.yml gives its services.
    const appDatabaseUrl = databaseUrl(pg, db.app);
    const simulatorPort = await freePort();
    const common: Record<string, string> = {
      NODE_ENV: 'production',
      LOG_LEVEL: 'info',
      DATABASE_URL: appDatabaseUrl,
      TEMPORAL_ADDRESS: server.address,
      TEMPORAL_NAMESPACE: NAMESPACE,
      BACKEND_URL: `http://127.0.0.1:${simulatorPort}`,
      BACKEND_WEBHOOK_SECRET: `whsec_${randomBytes(24).toString('base64')}`,
      ADMIN_API_KEY: `vgadmin_${randomBytes(24).toString('base64url')}`,
      // Seconds, not minutes, per video; everything else is the production default.
      SIM_P50_MS: '400',
      SIM_P99_MS: '1200',
    };
    const exitedEarly: string[] = [];
    const launch = (name: string, script: string, env: Record<string, string>) => {
      const child = spawnTsProcess({ name: `topology/${name}`, script, env: { ...common, ...env } });
      let stopped = false;
      void child.exited.then(({ code, signal }) => stopped || exitedEarly.push(`${name} (code ${code}, signal ${signal}; see ${rel(child.logFile)})`));
      stoppers.push({
        name,
        stop: async () => {
          stopped = true;
          await child.stop(20_000);
        },
      });
      return child;
    };

    const simulator = launch('simulator', 'simulator/main.ts', { SIMULATOR_PORT: String(simulatorPort) });
    await waitForHttp(`${common.BACKEND_URL}/healthz`, simulator);

    // The migrate step, once, before any service: migrations, and the namespace's retention (TEMPORAL_RETENTION_DAYS).
    const migrateStep = spawnTsProcess({ name: 'topology/migrate', script: 'src/migrate.ts', env: common });
    const migrated = await migrateStep.exited;
    if (migrated.code !== 0) throw new Error(`the migrate step failed (code ${migrated.code}); see ${rel(migrateStep.logFile)}\n${tail(migrateStep.logFile)}`);
    step(`migrate step done (database migrated, namespace retention ${loadConfig(common).temporal.retentionDays} days)`);

    const apis = await Promise.all(
      Array.from({ length: APIS }, async (_, i) => {
        const port = await freePort();
        const url = `http://127.0.0.1:${port}`;
        return { url, process: launch(`api-${i + 1}`, 'src/api/main.ts', { PORT: String(port), PUBLIC_URL: url }) };
      }),
    );
    await Promise.all(apis.map((api) => waitForHttp(`${api.url}/readyz`, api.process)));
    step(`backend simulator ${common.BACKEND_URL}; APIs ${apis.map((a) => a.url).join(', ')}`);

    // Each worker gives the backend a different API for its callbacks, so callbacks land on both.
    const workers = await Promise.all(
      Array.from({ length: WORKERS }, async (_, i) => {
        const env = { WORKER_ROLE: 'all', PUBLIC_URL: apis[i % APIS].url, METRICS_PORT: String(await freePort()) };
        return launch(`worker-${i + 1}`, 'src/worker.ts', env);
      }),
    );
    const identities = workers.map((w) => `${w.pid}@${os.hostname()}`);
    await waitForPollers(server.address, identities, workers);
    step(`workers ${identities.join(', ')} (WORKER_ROLE=all) polling generation and gpu`);
    step(`ready in ${seconds(startedAt)}; logs in ${rel(RUN_DIR)}/`);

    const code = await runJest({
      TOPOLOGY_API_URLS: apis.map((a) => a.url).join(','),
      TOPOLOGY_ADMIN_API_KEY: common.ADMIN_API_KEY,
      TOPOLOGY_DATABASE_URL: appDatabaseUrl,
      TOPOLOGY_TEMPORAL_ADDRESS: server.address,
      TOPOLOGY_TEMPORAL_NAMESPACE: NAMESPACE,
      TOPOLOGY_TEMPORAL_RETENTION_DAYS: String(loadConfig(common).temporal.retentionDays),
      TOPOLOGY_TEMPORAL_DATABASE_URL: databaseUrl(pg, db.temporal),
      TOPOLOGY_WORKER_IDENTITIES: identities.join(','),
    });
    if (exitedEarly.length > 0) {
      say(`processes that exited during the run: ${exitedEarly.join('; ')}`);
      return 1;
    }
    return code;
  } catch (err) {
    say(`\ntopology failed: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  } finally {
    say('stopping…');
    await stopAll();
    say(`done in ${seconds(startedAt)}`);
  }
}

/** Runs the end-to-end suite as its own jest process, in the foreground. */
function runJest(env: Record<string, string>): Promise<number> {
  step('running test/topology (jest -c jest.topology.config.js)');
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [require.resolve('jest/bin/jest'), '-c', 'jest.topology.config.js', '--runInBand', '--forceExit'], {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdio: 'inherit',
    });
    child.once('exit', (code, signal) => resolve(code ?? (signal ? 1 : 0)));
  });
}

async function waitForHttp(url: string, owner: SpawnedProcess, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const ok = await fetch(url).then((r) => r.ok, () => false);
    if (ok) return;
    await assertAlive(owner);
    await new Promise((r) => setTimeout(r, 250));
  }
  throw new Error(`${url} did not answer within ${timeoutMs} ms; see ${rel(owner.logFile)}`);
}

/** Ready when Temporal sees every worker polling both task queues (workflows on generation, activities on gpu). */
async function waitForPollers(address: string, identities: string[], owners: SpawnedProcess[], timeoutMs = 120_000): Promise<void> {
  const { TaskQueueType } = temporal.api.enums.v1;
  const queues = [
    { name: 'generation', type: TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW },
    { name: 'gpu', type: TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY },
  ];
  const connection = await Connection.connect({ address });
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      let ready = true;
      for (const queue of queues) {
        const { pollers } = await connection.workflowService.describeTaskQueue({ namespace: NAMESPACE, taskQueue: { name: queue.name }, taskQueueType: queue.type });
        const seen = new Set((pollers ?? []).map((p) => p.identity));
        ready &&= identities.every((id) => seen.has(id));
      }
      if (ready) return;
      for (const owner of owners) await assertAlive(owner);
      await new Promise((r) => setTimeout(r, 500));
    }
    throw new Error(`workers ${identities.join(', ')} did not poll both task queues within ${timeoutMs} ms`);
  } finally {
    await connection.close();
  }
}

async function assertAlive(owner: SpawnedProcess): Promise<void> {
  const exited = await Promise.race([owner.exited, new Promise<undefined>((r) => setImmediate(() => r(undefined)))]);
  if (exited) throw new Error(`${owner.name} exited (code ${exited.code}, signal ${exited.signal}); last lines of ${rel(owner.logFile)}:\n${tail(owner.logFile)}`);
}

function rel(file: string): string {
  return path.relative(ROOT, file);
}

function seconds(since: number): string {
  return `${((Date.now() - since) / 1000).toFixed(1)} s`;
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function step(line: string): void {
  say(`• ${line}`);
}

void main().then((code) => process.exit(code));
