/**
 * `npm start`: the whole service on one machine, in the foreground. Starts the Temporal dev server (unless
 * TEMPORAL_ADDRESS is set), Postgres (embedded unless DATABASE_URL is set), applies migrations, creates the demo user on
 * first start, then runs the backend simulator, the worker (generation + GPU dispatcher) and the API as child processes.
 * Ctrl-C, a failed start or a crash stops everything in reverse order (scripts/lib/supervisor.ts).
 */
import fs from 'node:fs';
import path from 'node:path';
import { Client, Connection } from '@temporalio/client';
import { resolveAdminApiKey } from '../src/api/admin-key';
import { createUser, findUserByApiKey } from '../src/api/auth';
import { loadConfig, type Config } from '../src/config';
import { resolvePayloadKeys } from '../src/payload-keys';
import { createDatabase } from '../src/db/client';
import { startEmbeddedPostgres } from './lib/embedded-postgres';
import { startMailpit } from './lib/mailpit';
import { createLogger } from '../src/lib/logger';
import { serviceNodeOptions } from './lib/node-options';
import { migrate } from '../src/migrate';
import { buildIdOf, makeVersionCurrent } from '../src/worker-deployment';
import { loadSimulatorSettings } from '../simulator/settings';
import { isPortFree } from './lib/ports';
import { exitOf, spawnService, stopChild, Supervisor } from './lib/supervisor';
import { startTemporalDevServer, waitForTemporal } from './lib/temporal-dev-server';

const ROOT = path.resolve(__dirname, '..');
let supervisor: Supervisor | undefined;

/**
 * The build id of the one worker `npm start` runs, unless WORKER_BUILD_ID says otherwise: one version across restarts,
 * so the jobs a start left running (pinned to its version) go on after a pull and a new start, their new code replaying
 * them behind patches (docs/decisions.md, "Replay safety"). Commit-named versions are for rolling deploys.
 */
const LOCAL_BUILD_ID = 'local';

/** Where the codec endpoint is served: the admin listener when there is one, else the API. */
const codecBase = (config: Config) => `http://127.0.0.1:${config.api.adminListener?.port || config.api.port}`;

async function main(): Promise<void> {
  const startedAt = Date.now();
  process.env.WORKER_BUILD_ID ||= LOCAL_BUILD_ID;
  const config = loadConfig();
  const dataDir = path.resolve(ROOT, config.database.dataDir);
  const logDir = path.join(dataDir, 'logs');
  fs.mkdirSync(logDir, { recursive: true });
  supervisor = new Supervisor(path.join(dataDir, 'processes.json'), say);
  supervisor.install();
  await run(config, supervisor, { startedAt, dataDir, logDir });
}

async function run(config: Config, supervisor: Supervisor, { startedAt, dataDir, logDir }: { startedAt: number; dataDir: string; logDir: string }): Promise<void> {
  await supervisor.stopLeftovers();
  await checkPorts(config);

  // Temporal
  let temporalAddress = config.temporal.address;
  let temporalUi: string | undefined;
  if (config.temporal.external) {
    step(`Temporal: using ${temporalAddress}`);
    await waitForTemporal(temporalAddress, 30_000);
  } else {
    step(`Temporal: starting the dev server (fairness on, one partition per task queue; state in ${rel(dataDir)}/temporal.db)`);
    const temporal = await startTemporalDevServer({
      port: config.temporal.devPort,
      uiPort: config.temporal.devUiPort,
      dbFile: path.join(dataDir, 'temporal.db'),
      logFile: path.join(logDir, 'temporal.log'),
      singlePartition: true,
      // The Web UI shows payloads (encrypted in Temporal) through the API's codec endpoint, once an operator signs in.
      uiCodecEndpoint: `${codecBase(config)}/codec`,
      onSpawn: (pid, stop) => supervisor.add({ name: 'temporal', pid, stop }),
    });
    supervisor.watch('temporal', temporal.exited, path.join(logDir, 'temporal.log'));
    temporalAddress = temporal.address;
    temporalUi = temporal.uiUrl;
  }
  if (supervisor.isStopping) return;

  // Postgres
  let databaseUrl = config.database.url;
  if (databaseUrl) {
    step('Postgres: using DATABASE_URL');
  } else {
    step(`Postgres: starting embedded Postgres (data in ${rel(dataDir)}/postgres, port ${config.database.embeddedPort})`);
    const pg = await startEmbeddedPostgres({ dataDir, port: config.database.embeddedPort, logger: createLogger('start', 'warn'), logFile: path.join(logDir, 'postgres.log') });
    supervisor.add({ name: 'postgres', pid: pg.pid, stop: pg.stop });
    supervisor.watch('postgres', pg.exited, path.join(logDir, 'postgres.log'));
    if (pg.relocated) step(`Postgres: ${pg.relocated}`);
    databaseUrl = pg.url;
  }
  if (supervisor.isStopping) return;

  // Mail: a local Mailpit catches what the service sends, unless SMTP_URL names a real mail server.
  let mailUi: string | undefined;
  if (config.mail.external) {
    step('Mail: using SMTP_URL');
  } else {
    step(`Mail: starting Mailpit (SMTP on ${config.mail.mailpitSmtpPort}, mail in ${rel(dataDir)}/mailpit.db)`);
    const mailpit = await startMailpit({
      smtpPort: config.mail.mailpitSmtpPort,
      uiPort: config.mail.mailpitUiPort,
      dbFile: path.join(dataDir, 'mailpit.db'),
      logFile: path.join(logDir, 'mailpit.log'),
      onSpawn: (pid, stop) => supervisor.add({ name: 'mailpit', pid, stop }),
    });
    supervisor.watch('mailpit', mailpit.exited, path.join(logDir, 'mailpit.log'));
    mailUi = mailpit.uiUrl;
  }
  if (supervisor.isStopping) return;
  await migrate({ databaseUrl, temporal: { ...config.temporal, address: temporalAddress }, logger: createLogger('migrate', 'warn') });
  const demoKeyFile = path.join(dataDir, 'demo-api-key');
  await ensureDemoUser(databaseUrl, demoKeyFile, config.generation.creditGrants.pro ?? 0);
  // The API's own rule (made once into the data folder when unset), resolved here so every child gets the same key.
  const admin = resolveAdminApiKey(config);
  // Likewise the payload key (made once into the data folder when PAYLOAD_KEYS is unset), before any child reads it.
  resolvePayloadKeys(config);

  const env: Record<string, string> = {
    ...(process.env as Record<string, string>),
    TEMPORAL_ADDRESS: temporalAddress,
    DATABASE_URL: databaseUrl,
    ADMIN_API_KEY: admin.key,
    BACKEND_URL: config.backend.url,
    NODE_OPTIONS: serviceNodeOptions(process.env.NODE_OPTIONS),
  };
  for (const [name, entry] of [
    ['simulator', 'simulator/main.ts'],
    ['worker', 'src/worker.ts'],
    ['api', 'src/api/main.ts'],
  ] as const) {
    if (supervisor.isStopping) return;
    const logFile = path.join(logDir, `${name}.log`);
    step(`${name}: starting (log: ${rel(logFile)})`);
    const child = spawnService(entry, { cwd: ROOT, env, logFile });
    supervisor.watch(name, exitOf(child), logFile);
    supervisor.add({ name, pid: child.pid, stop: () => stopChild(child) });
  }
  await waitForHttp(`${config.backend.url}/healthz`, 30_000);
  await waitForHttp(`http://127.0.0.1:${config.api.port}/healthz`, 30_000);
  await waitForPoller(temporalAddress, config.temporal.namespace, config.worker.generationTaskQueue, 60_000);
  if (supervisor.isStopping) return;
  const version = config.worker.versioning.enabled ? await makeCurrent(temporalAddress, config) : undefined;

  const api = `http://127.0.0.1:${config.api.port}`;
  const demoKey = `$(cat ${rel(demoKeyFile)})`;
  say(`
Ready in ${((Date.now() - startedAt) / 1000).toFixed(1)} s.

  API           ${api}  (status page: ${api}/, reference: ${api}/docs)
  Temporal UI   ${temporalUi ?? '(external Temporal: its own UI)'}
  Temporal      ${temporalAddress}${version ? `  (workers: ${version})` : ''}
  Simulator     ${config.backend.url}
  Mailpit       ${mailUi ? `${mailUi}  (the mail the service sent; SMTP on 127.0.0.1:${config.mail.mailpitSmtpPort})` : '(not started: mail goes to SMTP_URL)'}
  Logs          ${rel(logDir)}/

  Demo API key  in ${rel(demoKeyFile)}
  Admin key     ${admin.file ? `in ${rel(admin.file)}` : 'ADMIN_API_KEY'}  (sign in at ${codecBase(config)}/codec/login to read job payloads in the Temporal UI)

Try it (from the repository's folder):
  curl -s -X POST ${api}/v1/generations -H "Authorization: Bearer ${demoKey}" -H "Content-Type: application/json" -H "Idempotency-Key: $(date +%s)" -d '{"prompt":"a red fox running through snow"}'
  curl -s ${api}/v1/generations -H "Authorization: Bearer ${demoKey}"

Ctrl-C stops everything.`);
}

function say(line: string): void {
  process.stdout.write(`${line}\n`);
}

function step(line: string): void {
  say(`• ${line}`);
}

const rel = (p: string) => path.relative(ROOT, p) || '.';

/** Every port this start would bind, checked before anything starts, so a taken one is named rather than crashing a child. */
async function checkPorts(config: Config): Promise<void> {
  const ports: Array<[number, string]> = [
    [config.api.port, 'PORT'],
    [loadSimulatorSettings().port, 'SIMULATOR_PORT'],
  ];
  if (!config.temporal.external) ports.push([config.temporal.devPort, 'TEMPORAL_DEV_PORT'], [config.temporal.devUiPort, 'TEMPORAL_DEV_UI_PORT']);
  if (!config.database.url) ports.push([config.database.embeddedPort, 'EMBEDDED_PG_PORT']);
  if (!config.mail.external) ports.push([config.mail.mailpitSmtpPort, 'MAILPIT_SMTP_PORT'], [config.mail.mailpitUiPort, 'MAILPIT_UI_PORT']);
  if (config.worker.metricsPort !== 0) ports.push([config.worker.metricsPort, 'METRICS_PORT']);
  for (const [port, setting] of ports) {
    if (!(await isPortFree(port))) throw new Error(`port ${port} is taken: stop what listens on it, or set ${setting} to another port`);
  }
}

/** The demo user's key is kept in the data folder (git-ignored); the database holds only its hash. */
async function ensureDemoUser(databaseUrl: string, keyFile: string, credits: number): Promise<void> {
  const { db, close } = createDatabase(databaseUrl, { max: 1 });
  try {
    if (fs.existsSync(keyFile) && (await findUserByApiKey(db, fs.readFileSync(keyFile, 'utf8').trim()))) return;
    const { apiKey } = await createUser(db, { name: 'demo', tier: 'pro', credits });
    fs.writeFileSync(keyFile, `${apiKey}\n`, { mode: 0o600 });
    step('demo user created (tier pro)');
  } finally {
    await close();
  }
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

/**
 * The one worker `npm start` runs is the only version there is: it is made current, whatever was current before (a
 * start with another WORKER_BUILD_ID: the dev server keeps its state in DATA_DIR). A first start's worker has made itself
 * current already (src/worker-deployment.ts); a rolling upgrade, with old and new workers side by side, is the runbook's.
 */
async function makeCurrent(address: string, config: Config): Promise<string> {
  const { deploymentName } = config.worker.versioning;
  const buildId = buildIdOf(config.worker.versioning);
  const connection = await Connection.connect({ address });
  try {
    const client = new Client({ connection, namespace: config.temporal.namespace });
    const logger = createLogger('start', 'silent');
    const outcome = await makeVersionCurrent(client, { deploymentName, buildId, identity: 'npm start', logger, timeoutMs: 30_000, evenIfAnotherIs: true });
    if (outcome === 'gave-up') throw new Error(`could not make the worker's version ${deploymentName}:${buildId} current`);
    if (outcome === 'made-current') {
      step(`worker version ${deploymentName}:${buildId} made current (jobs pinned to an earlier build wait for it: docs/runbook.md, "Roll out new worker code")`);
    }
  } finally {
    await connection.close();
  }
  return `${deploymentName}:${buildId}`;
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

main().catch((err: unknown) => {
  say(`\nstart failed: ${err instanceof Error ? err.message : String(err)}`);
  // Whatever had started is stopped before the exit.
  if (supervisor) void supervisor.stopAll(1);
  else process.exit(1);
});
