/**
 * `npm run topology:test`: the production topology of docker-compose.yml, without docker, on this machine's Postgres.
 *
 *   Postgres (DATABASE_URL's server, else postgres://postgres@127.0.0.1:5432/postgres)
 *     ├─ fresh databases for this run: Temporal's, Temporal visibility's, the app's (dropped at the end)
 *   Temporal server 1.29 (go.temporal.io/server) on them, fairness on (deploy/temporal/dynamicconfig.yaml), free ports
 *   the migrate step (src/migrate.ts: migrations, the namespace's retention), then
 *   backend simulator · API #1 · API #2 · v1 worker #1 · v1 worker #2 (WORKER_ROLE=all: generation worker + GPU
 *   dispatcher, versioned: deployment `videogen`, v1 = the code before the lean run, scripts/lib/topology-versions.ts)
 *
 * then runs test/topology/rolling-upgrade.e2e.ts, which starts the v2 workers (this checkout) and stops the v1 ones
 * through a control endpoint of this script, and then the rest of test/topology/*.e2e.ts against the v2 workers
 * (jest.topology.config.js); it stops everything, also on failure or Ctrl-C. Logs and the rendered server config go to
 * test/artifacts/topology/.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Connection } from '@temporalio/client';
import { temporal } from '@temporalio/proto';
import { loadConfig } from '../src/config';
import { buildIdOf } from '../src/worker-deployment';
import { buildWorkflowBundles } from '../src/workflow-bundle';
import { newPayloadKey } from '../src/lib/payload-codec';
import { spawnTsProcess, type SpawnedProcess } from '../test/processes';
import { freePort } from './lib/ports';
import { temporalBinary } from './lib/temporal-dev-server';
import { checkPostgres, createDatabases, databaseUrl, DEFAULT_POSTGRES_URL, dropDatabases, postgresServer } from './lib/topology-postgres';
import { DYNAMIC_CONFIG, provisionNamespace, setupSchema, startTemporalServer, tail, temporalServerTools } from './lib/topology-temporal';
import { materialiseOldVersion } from './lib/topology-versions';

const ROOT = path.resolve(__dirname, '..');
const RUN_DIR = path.join(ROOT, 'test/artifacts/topology');
const NAMESPACE = 'default';
const WORKERS = 2;
const APIS = 2;
const DEPLOYMENT_NAME = 'videogen';
/**
 * A version's drainage status is refreshed from visibility every 3 minutes by default, after a 3-minute grace period: the
 * test's server looks every few seconds so the upgrade test sees v1 drain within its run. Nothing else differs from
 * deploy/temporal/dynamicconfig.yaml.
 */
const TEST_DYNAMIC_CONFIG = `
# scripts/topology.ts: drainage status refreshed in seconds, for the rolling-upgrade test only.
matching.wv.VersionDrainageStatusVisibilityGracePeriod:
  - value: 5s
matching.wv.VersionDrainageStatusRefreshInterval:
  - value: 2s
`;

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
    // The rolling upgrade's v1: the code before the lean run, with worker versioning, in a temporary folder.
    const v1Code = materialiseOldVersion();
    stoppers.push({ name: 'v1 code', stop: async () => v1Code.remove(), done: `removed ${v1Code.dir}` });
    step(`v1 code: ${v1Code.sha.slice(0, 12)} (the commit before the lean run) + worker versioning (${v1Code.applied.map((c) => c.slice(0, 12)).join(', ')}) in ${v1Code.dir}`);
    // This checkout's workflow code, bundled as the image's build does: its workers (NODE_ENV=production) start only with it.
    const bundled = await buildWorkflowBundles();
    step(`workflow code bundled into ${rel(bundled.dir)} in ${(bundled.ms / 1000).toFixed(1)} s (npm run build)`);

    const pg = postgresServer(loadConfig().database.url ?? DEFAULT_POSTGRES_URL);
    const version = await checkPostgres(pg);
    const suffix = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
    const db = { temporal: `vg_topo_temporal_${suffix}`, visibility: `vg_topo_visibility_${suffix}`, app: `vg_topo_app_${suffix}` };
    await createDatabases(pg, Object.values(db));
    stoppers.push({ name: 'databases', stop: () => dropDatabases(pg, Object.values(db)), done: `dropped ${Object.values(db).join(', ')}` });
    step(`Postgres ${version} at ${pg.host}:${pg.port}: created ${Object.values(db).join(', ')}`);

    await Promise.all([setupSchema(tools, pg, db.temporal, 'temporal'), setupSchema(tools, pg, db.visibility, 'visibility')]);
    step('Temporal schemas set up (temporal-sql-tool setup-schema -v 0.0, update-schema to the newest)');

    const dynamicConfigFile = path.join(RUN_DIR, 'config', 'dynamicconfig.yaml');
    fs.mkdirSync(path.dirname(dynamicConfigFile), { recursive: true });
    fs.writeFileSync(dynamicConfigFile, fs.readFileSync(DYNAMIC_CONFIG, 'utf8') + TEST_DYNAMIC_CONFIG);
    const server = await startTemporalServer({ tools, pg, database: db.temporal, visibilityDatabase: db.visibility, runDir: RUN_DIR, dynamicConfigFile });
    stoppers.push({ name: 'Temporal server', stop: server.stop });
    step(`Temporal server ${server.address} (pid ${server.pid}; config ${rel(server.configFile)}; dynamic config deploy/temporal/dynamicconfig.yaml + drainage refresh in seconds)`);
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
      // v1 predates the payload codec: as a real cluster turning it on would, everything opens sealed payloads and none
      // seals them until no v1 worker is left (docs/runbook.md). Sealing itself: test/payload-encryption.test.ts.
      PAYLOAD_KEYS: newPayloadKey('topology1'),
      PAYLOAD_ENCRYPT: 'false',
      WORKER_DEPLOYMENT_NAME: DEPLOYMENT_NAME,
      // Seconds, not minutes, per video; everything else is the production default.
      SIM_P50_MS: '400',
      SIM_P99_MS: '1200',
    };
    const exitedEarly: string[] = [];
    /** Processes stopped on purpose before the end (the v1 workers, once drained). */
    const retired = new Set<SpawnedProcess>();
    const launch = (name: string, script: string, env: Record<string, string>, root?: string) => {
      const child = spawnTsProcess({ name: `topology/${name}`, script, env: { ...common, ...env }, root });
      let stopped = false;
      void child.exited.then(({ code, signal }) => stopped || retired.has(child) || exitedEarly.push(`${name} (code ${code}, signal ${signal}; see ${rel(child.logFile)})`));
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

    // Each worker gives the backend a different API for its callbacks, so callbacks land on both. A version's workers
    // are WORKER_ROLE=all processes of one checkout; v1's has no git, so its commit comes as an image's would.
    // A dispatcher polls `gpu` only while it holds a free GPU slot lease: a version started beside a busy one may not
    // poll it yet (docs/runbook.md, "Roll out new worker code"), so its readiness is its workflow poll.
    const startWorkers = async (label: 'v1' | 'v2', root?: string, env: Record<string, string> = {}, queues = ALL_QUEUES) => {
      const processes = await Promise.all(
        Array.from({ length: WORKERS }, async (_, i) => {
          // Four worker processes overlap during the upgrade, beside the Temporal server's ~45 connections and the APIs'
          // ~20, on a Postgres that allows 100 (shared with whatever else runs on it): four connections a worker.
          const workerEnv = { WORKER_ROLE: 'all', PUBLIC_URL: apis[i % APIS].url, METRICS_PORT: String(await freePort()), WORKER_DATABASE_POOL_SIZE: '4', ...env };
          return launch(`worker-${label}-${i + 1}`, 'src/worker.ts', workerEnv, root);
        }),
      );
      const identities = processes.map((w) => `${w.pid}@${os.hostname()}`);
      await waitForPollers(server.address, identities, processes, queues);
      return { processes, identities };
    };
    const versioningOf = (env: Record<string, string>) => loadConfig({ ...common, ...env }).worker.versioning;
    const v1Env = { BUILD_GIT_SHA: v1Code.sha };
    const versions = {
      v1: { buildId: buildIdOf(versioningOf(v1Env), v1Code.dir), workers: await startWorkers('v1', v1Code.dir, v1Env), stopped: false },
      v2: { buildId: buildIdOf(versioningOf({})), workers: undefined as Awaited<ReturnType<typeof startWorkers>> | undefined },
    };
    if (versions.v1.buildId === versions.v2.buildId) throw new Error(`v1 and v2 have the same build id ${versions.v1.buildId}`);
    step(`v1 workers ${versions.v1.workers.identities.join(', ')} (WORKER_ROLE=all, ${DEPLOYMENT_NAME}:${versions.v1.buildId}) polling generation and gpu`);
    await waitForCurrentVersion(server.address, versions.v1.buildId);
    step(`${DEPLOYMENT_NAME}:${versions.v1.buildId} made itself current (a brand-new deployment's first version)`);

    // The upgrade test starts v2 and stops v1 through here; this script keeps owning every process.
    const startV2 = async () => {
      versions.v2.workers ??= await startWorkers('v2', undefined, {}, [GENERATION_QUEUE]);
      step(`v2 workers ${versions.v2.workers.identities.join(', ')} (${DEPLOYMENT_NAME}:${versions.v2.buildId}) polling generation`);
      return versions.v2.workers.identities;
    };
    const stopV1 = async () => {
      for (const p of versions.v1.workers.processes) retired.add(p);
      const exits = await Promise.all(versions.v1.workers.processes.map((p) => p.stop(60_000)));
      versions.v1.stopped = true;
      step(`v1 workers stopped (${exits.map((e) => `code ${e.code}, signal ${e.signal}`).join('; ')})`);
      return exits;
    };
    const control = await startControlServer({ 'POST /v2/start': async () => ({ identities: await startV2() }), 'POST /v1/stop': async () => ({ exits: await stopV1() }) });
    stoppers.push({ name: 'control endpoint', stop: control.close });
    step(`ready in ${seconds(startedAt)}; logs in ${rel(RUN_DIR)}/`);

    const topologyEnv = {
      TOPOLOGY_API_URLS: apis.map((a) => a.url).join(','),
      TOPOLOGY_ADMIN_API_KEY: common.ADMIN_API_KEY,
      TOPOLOGY_DATABASE_URL: appDatabaseUrl,
      TOPOLOGY_TEMPORAL_ADDRESS: server.address,
      TOPOLOGY_TEMPORAL_NAMESPACE: NAMESPACE,
      TOPOLOGY_TEMPORAL_RETENTION_DAYS: String(loadConfig(common).temporal.retentionDays),
      TOPOLOGY_TEMPORAL_DATABASE_URL: databaseUrl(pg, db.temporal),
      TOPOLOGY_SIMULATOR_URL: common.BACKEND_URL,
      TOPOLOGY_DEPLOYMENT_NAME: DEPLOYMENT_NAME,
    };
    const upgraded = await runJest(['test/topology/rolling-upgrade.e2e.ts'], {
      ...topologyEnv,
      TOPOLOGY_CONTROL_URL: control.url,
      TOPOLOGY_V1_BUILD_ID: versions.v1.buildId,
      TOPOLOGY_V1_WORKER_IDENTITIES: versions.v1.workers.identities.join(','),
      TOPOLOGY_V2_BUILD_ID: versions.v2.buildId,
    });
    // The rest runs on v2 alone, whatever the upgrade test managed.
    await startV2();
    if (!versions.v1.stopped) await stopV1();
    const rest = await runJest(['--testPathIgnorePatterns', 'rolling-upgrade'], { ...topologyEnv, TOPOLOGY_WORKER_IDENTITIES: versions.v2.workers!.identities.join(',') });
    if (exitedEarly.length > 0) {
      say(`processes that exited during the run: ${exitedEarly.join('; ')}`);
      return 1;
    }
    return upgraded || rest;
  } catch (err) {
    say(`\ntopology failed: ${err instanceof Error ? err.message : String(err)}`);
    return 1;
  } finally {
    say('stopping…');
    await stopAll();
    say(`done in ${seconds(startedAt)}`);
  }
}

/** Runs end-to-end suites as a jest process of their own, in the foreground. */
function runJest(args: string[], env: Record<string, string>): Promise<number> {
  step(`running test/topology (jest -c jest.topology.config.js ${args.join(' ')})`);
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [require.resolve('jest/bin/jest'), '-c', 'jest.topology.config.js', '--runInBand', '--forceExit', ...args], {
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

const { TaskQueueType } = temporal.api.enums.v1;
const GENERATION_QUEUE = { name: 'generation', type: TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW };
const ALL_QUEUES = [GENERATION_QUEUE, { name: 'gpu', type: TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY }];

/** Ready when Temporal sees every worker polling the task queues (workflows on generation, activities on gpu). */
async function waitForPollers(address: string, identities: string[], owners: SpawnedProcess[], queues = ALL_QUEUES, timeoutMs = 120_000): Promise<void> {
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
    throw new Error(`workers ${identities.join(', ')} did not poll ${queues.map((q) => q.name).join(' and ')} within ${timeoutMs} ms`);
  } finally {
    await connection.close();
  }
}

/** A brand-new deployment's first version makes itself current (src/worker-deployment.ts): wait for it. */
async function waitForCurrentVersion(address: string, buildId: string, timeoutMs = 60_000): Promise<void> {
  const connection = await Connection.connect({ address });
  try {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const described = await connection.workflowService.describeWorkerDeployment({ namespace: NAMESPACE, deploymentName: DEPLOYMENT_NAME }).catch(() => undefined);
      const current = described?.workerDeploymentInfo?.routingConfig?.currentDeploymentVersion?.buildId;
      if (current === buildId) return;
      if (current) throw new Error(`the deployment's current version is ${current}, not ${buildId}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    throw new Error(`${DEPLOYMENT_NAME}:${buildId} was not made current within ${timeoutMs} ms`);
  } finally {
    await connection.close();
  }
}

/** POST-only JSON endpoint on 127.0.0.1 for the end-to-end tests to change the workers this script owns. */
async function startControlServer(routes: Record<string, () => Promise<unknown>>): Promise<{ url: string; close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    const route = routes[`${req.method} ${req.url}`];
    if (!route) return void res.writeHead(404).end();
    route().then(
      (body) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body)),
      (err: unknown) => res.writeHead(500, { 'content-type': 'application/json' }).end(JSON.stringify({ error: err instanceof Error ? err.message : String(err) })),
    );
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(() => resolve())) };
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
