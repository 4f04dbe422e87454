import { randomUUID } from 'node:crypto';
import { startApi } from '../src/api/main';
import { loadConfig } from '../src/config';
import { createLogger } from '../src/lib/logger';
import { generateWebhookSecret, signWebhook } from '../src/lib/webhook-signature';
import { apiClient, startStack, testEnv, type Stack } from './harness';

/**
 * Rotating BACKEND_WEBHOOK_SECRET: the API holds the new secret as current and the old one as previous while the backend
 * (the simulator) still signs with the old one. Polling is pushed out of reach, so only accepted callbacks end a job.
 */
describe('rotating the backend callback secret', () => {
  const oldSecret = generateWebhookSecret();
  const newSecret = generateWebhookSecret();
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      env: { BACKEND_WEBHOOK_SECRET: newSecret, BACKEND_WEBHOOK_SECRET_PREVIOUS: oldSecret, POLL_INTERVAL_MS: '600000' },
      simulatorWebhookSecret: oldSecret,
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  /** A callback for a job no workflow has: a valid signature gets 200 (ignored), any other 401. */
  async function postCallback(baseUrl: string, secret: string | null) {
    const body = JSON.stringify({
      event_id: `evt_${randomUUID()}`,
      type: 'job.succeeded',
      sequence: 2,
      job: { id: `job_${randomUUID()}`, client_key: 'gen_nothing:run:1:attempt:1', status: 'succeeded', video_url: null, error: null },
    });
    const headers = secret ? signWebhook(secret, `evt_${randomUUID()}`, body) : {};
    const res = await fetch(`${baseUrl}/internal/backend/callbacks`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body });
    return { status: res.status, body: (await res.json()) as { error?: { code: string } } };
  }

  test('callbacks the backend still signs with the previous secret are accepted, and counted', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const job = await api.submit({ prompt: 'a lighthouse during a key rotation' });
    expect(job.status).toBe(202);
    expect(await api.waitForTerminal(job.body.id, 60_000)).toMatchObject({ status: 'succeeded', video_url: expect.any(String) });
    expect(stack.simulator.simulator.stats()).toMatchObject({ callbacks_failed: 0 });
    expect(stack.simulator.simulator.stats().callbacks_sent).toBeGreaterThanOrEqual(1);
    const metrics = await (await fetch(`${stack.adminUrl}/metrics`)).text();
    expect(Number(/^vg_backend_callbacks_previous_secret_total (\d+)/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(1);
  });

  test('either secret is accepted; a third secret or no signature gets 401', async () => {
    expect((await postCallback(stack.apiUrl, newSecret)).status).toBe(200);
    expect((await postCallback(stack.apiUrl, oldSecret)).status).toBe(200);
    for (const secret of [generateWebhookSecret(), null]) {
      expect(await postCallback(stack.apiUrl, secret)).toEqual({ status: 401, body: { error: { code: 'invalid_signature', message: expect.any(String) } } });
    }
  });

  test('once BACKEND_WEBHOOK_SECRET_PREVIOUS is removed, the old secret is refused', async () => {
    const { BACKEND_WEBHOOK_SECRET_PREVIOUS: _dropped, ...env } = stack.env;
    const api = await startApi({ config: loadConfig({ ...env, PORT: '0' }), databaseUrl: testEnv().databaseUrl, logger: createLogger('rotated-api', 'warn'), adminApiKey: stack.adminApiKey });
    try {
      expect((await postCallback(api.url, oldSecret)).status).toBe(401);
      expect((await postCallback(api.url, newSecret)).status).toBe(200);
    } finally {
      await api.close({ graceMs: 0 });
    }
  });
});
