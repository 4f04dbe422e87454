import { startApi } from '../src/api/main';
import { loadConfig } from '../src/config';
import { creditBalance } from '../src/credits/ledger';
import { createLogger } from '../src/lib/logger';
import { signWebhook } from '../src/lib/webhook-signature';
import { freePort } from '../scripts/lib/ports';
import { apiClient, startStack, testEnv, type Stack } from './harness';

/** An API instance whose Temporal is unreachable, beside a healthy stack on the same database. */
describe('Temporal down', () => {
  let stack: Stack;
  let downApi: Awaited<ReturnType<typeof startApi>>;
  beforeAll(async () => {
    stack = await startStack();
    const config = loadConfig({ ...stack.env, TEMPORAL_ADDRESS: `127.0.0.1:${await freePort()}`, PORT: '0' });
    downApi = await startApi({ config, databaseUrl: testEnv().databaseUrl, logger: createLogger('test', 'silent'), adminApiKey: stack.adminApiKey });
  });
  afterAll(async () => {
    await downApi?.close({ graceMs: 0 });
    await stack?.close();
  });

  test('a submit answers 503 with Retry-After and leaves no row, key or reservation behind; the retry then succeeds', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const before = await creditBalance(stack.database.db, userId);
    const down = await apiClient(downApi.url, apiKey).submit({ prompt: 'while Temporal is down' }, 'retry-me');
    expect(down.status).toBe(503);
    expect(down.headers.get('retry-after')).toBe('5');
    expect(down.body.error.code).toBe('temporal_unavailable');
    const { sql } = stack.database;
    expect(await sql`select id from generations where user_id = ${userId}`).toHaveLength(0);
    expect(await sql`select key from idempotency_keys where user_id = ${userId}`).toHaveLength(0);
    expect(await creditBalance(stack.database.db, userId)).toEqual(before);

    // The client retries the same request with the same key against a healthy instance: one job, charged once.
    const api = apiClient(stack.apiUrl, apiKey);
    const retried = await api.submit({ prompt: 'while Temporal is down' }, 'retry-me');
    expect(retried.status).toBe(202);
    expect(retried.headers.get('idempotent-replayed')).toBeNull();
    expect((await api.waitForTerminal(retried.body.id)).status).toBe('succeeded');
  });

  test('readiness says which dependency is down', async () => {
    const down = await fetch(`${downApi.url}/readyz`);
    expect(down.status).toBe(503);
    expect(await down.json()).toMatchObject({ status: 'not_ready', checks: { postgres: 'ok', temporal: expect.stringMatching(/^unavailable/) } });
    const up = await fetch(`${stack.apiUrl}/readyz`);
    expect(up.status).toBe(200);
    expect(await up.json()).toEqual({ status: 'ready', checks: { postgres: 'ok', temporal: 'ok' } });
  });

  test('a backend callback that cannot be signalled answers 503, so the backend retries it', async () => {
    const body = JSON.stringify({
      event_id: 'evt_down',
      type: 'job.succeeded',
      sequence: 2,
      job: { id: 'job_x', client_key: 'gen_x:run:1:attempt:1', status: 'succeeded', video_url: 'https://videos.sim.local/x.mp4', error: null },
    });
    const res = await fetch(`${downApi.url}/internal/backend/callbacks`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signWebhook(stack.config.backend.webhookSecret, 'evt_down', body) },
      body,
    });
    expect(res.status).toBe(503);
  });
});
