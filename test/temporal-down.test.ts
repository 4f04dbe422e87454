import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import { startTemporalDevServer } from '../scripts/lib/temporal-dev-server';
import { freePort } from '../scripts/lib/ports';
import { startApi } from '../src/api/main';
import { createServiceStartRelay } from '../src/api/start-relay';
import { generationInput, startGeneration } from '../src/contracts/generation-start';
import { loadConfig } from '../src/config';
import { creditBalance } from '../src/credits/ledger';
import { createDatabase } from '../src/db/client';
import { createLogger } from '../src/lib/logger';
import { signWebhook } from '../src/lib/webhook-signature';
import { apiClient, eventually, startStack, testEnv, type Stack } from './harness';
import { spawnTsProcess } from './processes';
import { startTcpProxy } from './tcp-proxy';

/**
 * Temporal's maintenance: a Temporal dev server of this file's own, on a SQLite file, that the tests stop and start again
 * (its state survives), under a whole stack. A submit whose admission committed is kept while Temporal is away and
 * started once it answers again — by the accepting API's relay, or by the reconciler when that API died.
 */
const RECONCILE_MS = 1_000;
// Three reconciler passes: any second start of a job, by any path, would have happened within it.
const SETTLE_MS = 3 * RECONCILE_MS;

function ownTemporal(dir: string) {
  const options = { port: 0, dbFile: path.join(dir, 'temporal.db'), logFile: path.join(__dirname, 'artifacts', 'temporal-down-server.log'), singlePartition: true };
  let server: Awaited<ReturnType<typeof startTemporalDevServer>> | undefined;
  return {
    get address() {
      return `127.0.0.1:${options.port}`;
    },
    async start() {
      options.port ||= await freePort();
      server = await startTemporalDevServer(options);
    },
    async stop() {
      await server?.stop();
      server = undefined;
    },
    get running() {
      return server !== undefined;
    },
  };
}

/** Every run of the workflow `jobId` Temporal has, open or closed. */
async function runsOf(client: Client, jobId: string): Promise<number> {
  let runs = 0;
  for await (const _ of client.workflow.list({ query: `WorkflowId = '${jobId}'` })) runs++;
  return runs;
}

async function onceCounts(stack: Stack, jobId: string) {
  const [ledger] = await stack.database.sql`
    select count(*) filter (where kind = 'reserve')::int as reserves,
           count(*) filter (where kind = 'capture')::int as captures,
           count(*) filter (where kind = 'release')::int as releases
    from credit_ledger where job_id = ${jobId}`;
  return {
    runs: await runsOf(stack.client, jobId),
    backendJobs: stack.simulator.simulator.engine.list(`${jobId}:`).length,
    reserves: ledger.reserves as number,
    captures: ledger.captures as number,
    releases: ledger.releases as number,
  };
}

const settle = () => new Promise((r) => setTimeout(r, SETTLE_MS));

describe('Temporal stopped for maintenance', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-temporal-down-'));
  const temporal = ownTemporal(dir);
  let stack: Stack;
  beforeAll(async () => {
    await temporal.start();
    // A database of its own: the reconciler compares every row of its database with this Temporal, which has none of the
    // run's other workflows.
    stack = await startStack({ temporalAddress: temporal.address, env: { RECONCILE_INTERVAL_MS: String(RECONCILE_MS) }, ownDatabase: true });
  });
  afterEach(async () => {
    if (!temporal.running) await temporal.start(); // a failed test must not leave the next one without Temporal
  });
  afterAll(async () => {
    await stack?.close();
    await temporal.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('submits while it is stopped answer 202 and read queued, a replay answers the same job, and each runs exactly once after it is back', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const before = await creditBalance(stack.database.db, userId);
    await temporal.stop();

    const bodies = [0, 1, 2, 3].map((i) => ({ prompt: `submitted during maintenance ${i}`, duration_seconds: 2 }));
    const answers = await Promise.all(bodies.map((body, i) => api.submit(body, `maintenance-${i}`)));
    expect(answers.map((a) => a.status)).toEqual([202, 202, 202, 202]);
    expect(answers.map((a) => a.body.status)).toEqual(['queued', 'queued', 'queued', 'queued']);
    const ids = answers.map((a) => a.body.id as string);
    expect(new Set(ids).size).toBe(4);
    for (const id of ids) expect((await api.get(id)).body.status).toBe('queued');

    // The client never saw its answer and sends the submit again, Temporal still away: the same job, not a 503.
    const replay = await api.submit(bodies[0], 'maintenance-0');
    expect(replay.status).toBe(202);
    expect(replay.headers.get('idempotent-replayed')).toBe('true');
    expect(replay.body).toMatchObject({ id: ids[0], status: 'queued' });
    // Reserved once each, while nothing runs.
    const price = (await creditBalance(stack.database.db, userId)).reserved / 4;
    expect(price).toBeGreaterThan(0);

    await temporal.start();
    for (const id of ids) expect((await api.waitForTerminal(id)).status).toBe('succeeded');
    await settle();
    for (const id of ids) expect(await onceCounts(stack, id)).toEqual({ runs: 1, backendJobs: 1, reserves: 1, captures: 1, releases: 0 });
    expect(await creditBalance(stack.database.db, userId)).toEqual({ available: before.available - 4 * price, reserved: 0, used: 4 * price });
  });

  test('a job whose API process died before its relay could start it is started by the reconciler', async () => {
    const { apiKey } = await stack.createUser('pro');
    const port = await freePort();
    const doomed = spawnTsProcess({ name: 'temporal-down-api', script: 'src/api/main.ts', env: { ...stack.env, PORT: String(port), LOG_LEVEL: 'warn' } });
    try {
      const doomedApi = apiClient(`http://127.0.0.1:${port}`, apiKey);
      await eventually(async () => ((await fetch(`http://127.0.0.1:${port}/healthz`).catch(() => undefined))?.ok ? true : undefined), { timeoutMs: 60_000, what: 'the second API to listen' });
      await temporal.stop();
      const accepted = await doomedApi.submit({ prompt: 'accepted by an API that then died', duration_seconds: 2 }, 'orphaned-by-a-crash');
      expect(accepted.status).toBe(202);
      expect(accepted.body.status).toBe('queued');
      doomed.kill('SIGKILL');
      await doomed.exited;

      await temporal.start();
      const api = apiClient(stack.apiUrl, apiKey);
      expect((await api.waitForTerminal(accepted.body.id)).status).toBe('succeeded');
      await settle();
      expect(await onceCounts(stack, accepted.body.id)).toEqual({ runs: 1, backendJobs: 1, reserves: 1, captures: 1, releases: 0 });
      // Started by the reconciler (in this process's worker), not by the dead API.
      const history = await stack.client.workflow.getHandle(accepted.body.id).fetchHistory();
      expect(history.events?.[0]?.workflowExecutionStartedEventAttributes?.identity).not.toContain(`${doomed.pid}@`);
    } finally {
      doomed.kill('SIGKILL');
    }
  });

  test('a relayed start of a job that has meanwhile ended changes nothing', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const request = { prompt: 'ended before its relayed start', duration_seconds: 2, resolution: '720p' as const, aspect_ratio: '16:9' as const, seed: null, webhook_url: null, metadata: {} };
    const job = (await api.submit(request, 'ended-first')).body;
    expect((await api.waitForTerminal(job.id)).status).toBe('succeeded');
    const input = generationInput(stack.config, { jobId: job.id, userId, tier: 'pro', request, acceptedAt: new Date(job.created_at) });

    // Through the relay (which finds the row no longer waiting), and straight at Temporal (which refuses a second run).
    const relay = createServiceStartRelay({ client: stack.client, config: stack.config, sql: stack.database.sql, logger: createLogger('test', 'silent') });
    relay.keep(input);
    await eventually(async () => (relay.size === 0 ? true : undefined), { what: 'the relay to let the ended job go' });
    relay.close();
    await startGeneration(stack.client, stack.config, input);
    await settle();
    expect(await onceCounts(stack, job.id)).toEqual({ runs: 1, backendJobs: 1, reserves: 1, captures: 1, releases: 0 });
    expect((await api.get(job.id)).body.status).toBe('succeeded');
  });

  test('while it is stopped, the API stays in service (degraded) and a backend callback answers 503 so the backend retries', async () => {
    await temporal.stop();
    // Submits are kept meanwhile: a load balancer reading readiness must keep sending them.
    const ready = await fetch(`${stack.apiUrl}/readyz`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'degraded', checks: { postgres: 'ok', temporal: expect.stringMatching(/^unavailable/) } });

    const body = JSON.stringify({
      event_id: 'evt_down',
      type: 'job.succeeded',
      sequence: 2,
      job: { id: 'job_x', client_key: 'gen_x:run:1:attempt:1', status: 'succeeded', video_url: 'https://videos.sim.local/x.mp4', error: null },
    });
    const callback = await fetch(`${stack.apiUrl}/internal/backend/callbacks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signWebhook(stack.config.backend.webhookSecret, 'evt_down', body) },
      body,
    });
    expect(callback.status).toBe(503);

    await temporal.start();
    await eventually(async () => (((await (await fetch(`${stack.apiUrl}/readyz`)).json()) as { status: string }).status === 'ready' ? true : undefined), {
      what: 'readiness once Temporal is back',
    });
  });
});

describe('Postgres down', () => {
  /** The tests' Postgres behind a TCP proxy that can cut it, and the database URL through the proxy. */
  async function postgresBehindProxy() {
    const databaseUrl = new URL(testEnv().databaseUrl);
    const proxy = await startTcpProxy({ host: databaseUrl.hostname, port: Number(databaseUrl.port || 5432) });
    const viaProxy = new URL(databaseUrl);
    viaProxy.host = `127.0.0.1:${proxy.port}`;
    return { proxy, viaProxy };
  }

  test('a submit is refused with 503 database_unavailable and Retry-After; once Postgres is back it is accepted', async () => {
    const stack = await startStack();
    const { proxy, viaProxy } = await postgresBehindProxy();
    const config = loadConfig({ ...stack.env, PORT: '0' });
    const api = await startApi({ config, databaseUrl: viaProxy.toString(), logger: createLogger('test', 'silent'), adminApiKey: stack.adminApiKey });
    try {
      const { apiKey } = await stack.createUser('pro');
      const client = apiClient(api.url, apiKey);
      expect((await client.submit({ prompt: 'before the outage' })).status).toBe(202);

      await proxy.cut();
      const refused = await client.submit({ prompt: 'while Postgres is down' }, 'pg-down');
      expect(refused.status).toBe(503);
      expect(refused.body.error.code).toBe('database_unavailable');
      expect(refused.headers.get('retry-after')).toBe('2');

      await proxy.restore();
      const retried = await eventually(async () => {
        const res = await client.submit({ prompt: 'while Postgres is down' }, 'pg-down');
        return res.status === 202 ? res : undefined;
      }, { what: 'the retry to be accepted' });
      expect((await apiClient(stack.apiUrl, apiKey).waitForTerminal(retried.body.id)).status).toBe('succeeded');
    } finally {
      await api.close({ graceMs: 0 });
      await proxy.close();
      await stack.close();
    }
  });

  test('however long the outage, a pool connects again within its capped backoff (2 s) once Postgres is back', async () => {
    const { proxy, viaProxy } = await postgresBehindProxy();
    const database = createDatabase(viaProxy.toString(), { max: 1 });
    try {
      await database.sql`select 1`;
      await proxy.cut();
      // Each failed attempt to connect lengthens the wait before the next: postgres.js's own backoff is 10-20 s from the
      // seventh on, so a pool that failed that often went on failing requests for that long after Postgres was back.
      for (let failed = 0; failed < 9; failed++) await expect(database.sql`select 1`).rejects.toThrow();
      await proxy.restore();
      const back = Date.now();
      await database.sql`select 1`;
      expect(Date.now() - back).toBeLessThan(4_000);
    } finally {
      await database.close();
      await proxy.close();
    }
  });

  test('an outage under load writes the first answer and warning of each kind and a count of the rest, not two lines a request', async () => {
    const stack = await startStack();
    const { proxy, viaProxy } = await postgresBehindProxy();
    const lines: Array<Record<string, unknown>> = [];
    // The shipped log level: a line per request.
    const logger = createLogger('outage-api', 'info', { destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) } });
    const api = await startApi({ config: loadConfig({ ...stack.env, PORT: '0' }), databaseUrl: viaProxy.toString(), logger, adminApiKey: stack.adminApiKey });
    let apiOpen = true;
    try {
      const { apiKey } = await stack.createUser('pro');
      const client = apiClient(api.url, apiKey);
      expect((await client.list()).status).toBe(200);

      await proxy.cut();
      // At once, as clients under load would send them (each waits for the pool's next attempt to connect, then fails).
      const answers = await Promise.all([
        ...Array.from({ length: 20 }, (_, i) => client.submit({ prompt: `during the outage ${i}` })),
        ...Array.from({ length: 20 }, () => client.list()),
      ]);
      expect(answers.map((r) => `${r.status} ${(r.body as { error?: { code?: string } }).error?.code}`)).toEqual(Array(40).fill('503 database_unavailable'));

      // Stopping is what writes the last counts.
      await api.close({ graceMs: 0 });
      apiOpen = false;

      // Every answer is accounted for: the first of each kind in a window, with its request id, and a count of the rest.
      const answerLines = lines.filter((l) => l.status === 503 && l.method !== undefined);
      const answerFirsts = answerLines.filter((l) => l.msg === 'request');
      expect(answerFirsts.length + answerLines.reduce((n, l) => n + Number(l.repeats ?? 0), 0)).toBe(40);
      expect(answerFirsts[0]).toMatchObject({ requestId: expect.any(String) });
      // Written one by one, they were 40 lines; counted, a few per kind (method and route) and window.
      expect(answerLines.length).toBeLessThanOrEqual(12);
      const warnings = lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('Postgres unavailable'));
      const written = warnings.filter((l) => l.err !== undefined);
      // The first warning of each error code carries the error; the rest are counted, none lost.
      expect(written.length).toBeGreaterThanOrEqual(1);
      expect(written.length + warnings.reduce((n, l) => n + Number(l.repeats ?? 0), 0)).toBe(40);
      expect(warnings.length).toBeLessThanOrEqual(12);
    } finally {
      if (apiOpen) await api.close({ graceMs: 0 });
      await proxy.close();
      await stack.close();
    }
  });
});
