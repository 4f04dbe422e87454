import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { DefaultLogger, Runtime } from '@temporalio/worker';
import { startApi } from '../src/api/main';
import { loadConfig, type Config } from '../src/config';
import { createDatabase } from '../src/db/client';
import { runMigrations } from '../src/db/migrate';
import { createLogger } from '../src/lib/logger';
import { startSimulator, type RunningSimulator } from '../simulator/app';
import type { SimulatorKnobs } from '../simulator/knobs';
import { loadSimulatorSettings } from '../simulator/settings';
import { reconcilerScheduleId } from '../src/reconciler-schedule';
import { retentionScheduleId } from '../src/retention/schedule';
import { createWorkers } from '../src/worker';
import { serviceDataConverter } from '../src/payload-keys';
import { TEST_PAYLOAD_KEYS } from './payload-keys';
import { eventually } from './eventually';

export { eventually, settled, SETTLE_MS } from './eventually';

/**
 * A whole service in the test process, on the run's real Temporal server and Postgres: backend simulator, API and worker
 * (generation worker + GPU dispatcher), with task queues of its own so stacks never see each other's work.
 */
let runtimeInstalled = false;

/** The Temporal SDK's own logs, errors only, once per test file (the Runtime is installed once per process). */
export function installQuietRuntime(): void {
  if (runtimeInstalled) return;
  Runtime.install({ logger: new DefaultLogger('ERROR') });
  runtimeInstalled = true;
}

export interface Stack {
  config: Config;
  /** The environment the stack's worker was configured from: spawn extra worker processes with it. */
  env: Record<string, string>;
  apiUrl: string;
  /** Where admin routes, /metrics and readiness details are served: the admin listener with ADMIN_PORT, else apiUrl. */
  adminUrl: string;
  adminApiKey: string;
  simulator: RunningSimulator;
  client: Client;
  database: ReturnType<typeof createDatabase>;
  setKnobs(knobs: Partial<SimulatorKnobs>): void;
  createUser(tier?: string): Promise<{ userId: string; apiKey: string }>;
  close(): Promise<void>;
}

export function testEnv(): { temporalAddress: string; databaseUrl: string; workflowBundle: string } {
  const temporalAddress = process.env.TEST_TEMPORAL_ADDRESS;
  const databaseUrl = process.env.TEST_DATABASE_URL;
  const workflowBundle = process.env.TEST_WORKFLOW_BUNDLE;
  if (!temporalAddress || !databaseUrl || !workflowBundle) throw new Error('run the tests through jest (test/global-setup.ts)');
  return { temporalAddress, databaseUrl, workflowBundle };
}

/**
 * A new, migrated database on the run's Postgres server, for tests of what is global to a database (the reconciler). The
 * stack drops it when it closes: on a shared server (DATABASE_URL) nothing else would.
 */
async function freshDatabaseUrl(runDatabaseUrl: string): Promise<string> {
  const name = `vg_own_${randomBytes(6).toString('hex')}`;
  const admin = createDatabase(runDatabaseUrl, { max: 1 });
  await admin.sql.unsafe(`create database ${name}`);
  await admin.close();
  const url = new URL(runDatabaseUrl);
  url.pathname = `/${name}`;
  await runMigrations(url.toString());
  return url.toString();
}

export async function startStack({
  env = {},
  knobs = {},
  ownDatabase = false,
  simulatorWebhookSecret,
  temporalAddress = testEnv().temporalAddress,
  inProcessWorkers = true,
}: {
  env?: Record<string, string>;
  knobs?: Partial<SimulatorKnobs>;
  ownDatabase?: boolean;
  /** The secret the simulator signs callbacks with, when not the API's current one (a rotation under way). */
  simulatorWebhookSecret?: string;
  /** A Temporal server of the test's own (one it stops and starts); the run's by default. */
  temporalAddress?: string;
  /** false: no worker in this process; the caller runs worker processes configured from the stack's `env`. */
  inProcessWorkers?: boolean;
} = {}): Promise<Stack> {
  const run = testEnv();
  const { workflowBundle } = run;
  // Other test files leave jobs behind in the run's database; a test of database-wide sweeps gets a database of its own.
  const databaseUrl = ownDatabase ? await freshDatabaseUrl(run.databaseUrl) : run.databaseUrl;
  installQuietRuntime();
  const id = randomBytes(4).toString('hex');
  const adminApiKey = `test-admin-${randomBytes(12).toString('hex')}`;
  const baseEnv: Record<string, string> = {
    NODE_ENV: 'test',
    LOG_LEVEL: 'error',
    TEMPORAL_ADDRESS: temporalAddress,
    DATABASE_URL: databaseUrl,
    PORT: '0',
    GENERATION_TASK_QUEUE: `generation-${id}`,
    GPU_TASK_QUEUE: `gpu-${id}`,
    // Unversioned: the run's stacks share one server, and a deployment version takes at most 100 task queues (two a
    // stack). Tests of versioning turn it on with a deployment of their own (test/runbook.test.ts; the rolling upgrade:
    // npm run topology:test).
    WORKER_VERSIONING: 'false',
    POLL_INTERVAL_MS: '500',
    HEARTBEAT_TIMEOUT_MS: '3000',
    HEARTBEAT_THROTTLE_MS: '300',
    RETRY_BACKOFF_MS: '100',
    GPU_SLOTS: '4',
    METRICS_PORT: '0',
    SIM_P50_MS: '300',
    SIM_P99_MS: '800',
    // Webhook receivers in tests listen on loopback; the retry schedule runs in milliseconds.
    WEBHOOK_ALLOWED_HOSTS: '127.0.0.0/8,::1,localhost',
    WEBHOOK_RETRY_SCALE: '0.00002',
    WEBHOOK_TIMEOUT_MS: '2000',
    SSE_KEEPALIVE_MS: '1000',
    // Every test client comes from 127.0.0.1 and some send bad keys on purpose: tests of the limit set it themselves.
    AUTH_FAILURE_BURST: '1000000',
    // Payloads sealed with the tests' key, which the recorded histories and the replay test share.
    PAYLOAD_KEYS: TEST_PAYLOAD_KEYS,
    // The run's Mailpit (test/global-setup.ts); test/mailpit.ts reads what arrived.
    ...(process.env.TEST_SMTP_URL ? { SMTP_URL: process.env.TEST_SMTP_URL } : {}),
    ...env,
  };
  const logger = createLogger('test', baseEnv.LOG_LEVEL);
  const base = loadConfig(baseEnv);
  const simulator = await startSimulator({
    port: 0,
    knobs: { ...loadSimulatorSettings(baseEnv).knobs, ...knobs },
    webhookSecret: simulatorWebhookSecret ?? base.backend.webhookSecret,
    logger: logger.child({ process: 'simulator' }),
  });
  const apiConfig = loadConfig({ ...baseEnv, BACKEND_URL: simulator.url });
  const api = await startApi({ config: apiConfig, databaseUrl, logger: logger.child({ process: 'api' }), adminApiKey });
  const workerEnv = { ...baseEnv, BACKEND_URL: simulator.url, PUBLIC_URL: api.url };
  const config = loadConfig(workerEnv);
  const workers = inProcessWorkers ? await createWorkers({ config, databaseUrl, logger: logger.child({ process: 'worker' }), workflowBundle: { codePath: workflowBundle } }) : undefined;
  const running = workers?.run();
  const connection = await Connection.connect({ address: temporalAddress });
  const client = new Client({ connection, dataConverter: serviceDataConverter(config) });
  const database = createDatabase(databaseUrl, { max: 4 });

  return {
    config,
    env: workerEnv,
    apiUrl: api.url,
    adminUrl: api.adminUrl,
    adminApiKey,
    simulator,
    client,
    database,
    setKnobs: (next) => simulator.simulator.engine.updateKnobs({ ...simulator.simulator.engine.knobs, ...next }),
    async createUser(tier = 'pro') {
      const res = await fetch(`${api.adminUrl}/admin/users`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminApiKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: `user-${randomBytes(3).toString('hex')}`, tier }),
      });
      if (res.status !== 201) throw new Error(`create user: ${res.status} ${await res.text()}`);
      const body = (await res.json()) as { user: { id: string }; api_key: string };
      return { userId: body.user.id, apiKey: body.api_key };
    },
    async close() {
      await client.schedule.getHandle(reconcilerScheduleId(config)).delete().catch(() => undefined);
      await client.schedule.getHandle(retentionScheduleId(config)).delete().catch(() => undefined);
      workers?.shutdown();
      await running;
      await api.close({ graceMs: 0 });
      await simulator.close();
      await connection.close();
      await database.close();
      if (ownDatabase) {
        const admin = createDatabase(run.databaseUrl, { max: 1 });
        await admin.sql.unsafe(`drop database if exists ${new URL(databaseUrl).pathname.slice(1)} with (force)`);
        await admin.close();
      }
    },
  };
}

/** A tiny API client for tests. */
export function apiClient(baseUrl: string, apiKey: string) {
  async function call(method: string, path: string, body?: unknown, headers: Record<string, string> = {}) {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${apiKey}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
      body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    });
    const text = await res.text();
    let json: any;
    try {
      json = text ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, headers: res.headers, body: json, text };
  }
  return {
    call,
    submit: (body: unknown, idempotencyKey?: string) =>
      call('POST', '/v1/generations', body, idempotencyKey ? { 'idempotency-key': idempotencyKey } : {}),
    get: (id: string) => call('GET', `/v1/generations/${id}`),
    list: (query = '') => call('GET', `/v1/generations${query}`),
    /** Waits until the job reaches a terminal status and returns it. */
    waitForTerminal: (id: string, timeoutMs = 60_000) =>
      eventually(
        async () => {
          const res = await call('GET', `/v1/generations/${id}`);
          return ['succeeded', 'failed', 'canceled', 'expired'].includes(res.body?.status) ? res.body : undefined;
        },
        { timeoutMs, what: `job ${id} to end` },
      ),
  };
}
