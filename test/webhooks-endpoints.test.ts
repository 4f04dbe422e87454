import { Webhook } from 'standardwebhooks';
import { startWebhookReceiver, type WebhookReceiver } from './notification-helpers';
import { cancelGenerationSignal } from '../src/contracts/generation';
import { apiClient, eventually, startStack, type Stack } from './harness';

type Api = ReturnType<typeof apiClient>;

/** Endpoint management and the delivery rules: 410, redirects, timeouts, event filters, the SSRF guard, rotation. */
describe('webhook endpoints and delivery rules', () => {
  let stack: Stack;
  const receivers: WebhookReceiver[] = [];
  const receiver = async (...args: Parameters<typeof startWebhookReceiver>) => {
    const r = await startWebhookReceiver(...args);
    receivers.push(r);
    return r;
  };

  beforeAll(async () => {
    stack = await startStack({ env: { WEBHOOK_TIMEOUT_MS: '1000' } });
  });
  afterAll(async () => {
    for (const r of receivers) await r.close();
    await stack?.close();
  });

  async function newUser() {
    return apiClient(stack.apiUrl, (await stack.createUser('pro')).apiKey);
  }

  async function addEndpoint(api: Api, body: Record<string, unknown>) {
    const res = await api.call('POST', '/v1/webhook-endpoints', body);
    expect(res.status).toBe(201);
    return res.body as { id: string; secret: string };
  }

  async function deliveries(api: Api, endpointId: string) {
    return (await api.call('GET', `/v1/webhook-endpoints/${endpointId}/deliveries`)).body.data as Array<Record<string, any>>;
  }

  function settled(api: Api, endpointId: string, jobId: string) {
    return eventually(
      async () => (await deliveries(api, endpointId)).find((d) => d.generation_id === jobId && d.status !== 'pending'),
      { what: `the delivery of ${jobId}`, timeoutMs: 30_000 },
    );
  }

  /** Waits until the job's end was notified (inbox row written): by then every delivery for it exists. */
  const notified = (api: Api, jobId: string) =>
    eventually(async () => ((await api.call('GET', '/v1/notifications')).body.data as Array<{ generation_id: string }>).find((n) => n.generation_id === jobId), {
      what: `the notification of ${jobId}`,
    });

  test('a 410 disables the endpoint: nothing more is sent to it until it is enabled again', async () => {
    const hooks = await receiver(() => ({ status: 410 }));
    const api = await newUser();
    const endpoint = await addEndpoint(api, { url: hooks.url });
    const first = await api.submit({ prompt: 'gone fishing' });
    const delivery = await settled(api, endpoint.id, first.body.id);
    expect(delivery).toMatchObject({ status: 'failed', attempt_count: 1, last_response_status: 410 });
    expect((await api.call('GET', `/v1/webhook-endpoints/${endpoint.id}`)).body).toMatchObject({ status: 'disabled', disabled_reason: expect.stringContaining('410') });

    const second = await api.submit({ prompt: 'still gone' });
    await notified(api, second.body.id);
    expect((await deliveries(api, endpoint.id)).map((d) => d.generation_id)).toEqual([first.body.id]);
    expect(hooks.received).toHaveLength(1);
    const replay = await api.call('POST', `/v1/webhook-endpoints/${endpoint.id}/deliveries/${delivery.id}/replay`);
    expect(replay.status).toBe(409);
    expect((await api.call('POST', `/v1/webhook-endpoints/${endpoint.id}/enable`)).body.status).toBe('enabled');
  });

  test('a redirect is not followed and a slow receiver times out; both count as failed attempts and are retried', async () => {
    const elsewhere = await receiver();
    const redirecting = await receiver((n) => (n === 1 ? { status: 302, headers: { location: elsewhere.url } } : { status: 204 }));
    const slow = await receiver((n) => (n === 1 ? { status: 204, delayMs: 3_000 } : { status: 204 }));
    const api = await newUser();
    const viaRedirect = await addEndpoint(api, { url: redirecting.url });
    const viaSlow = await addEndpoint(api, { url: slow.url });
    const job = await api.submit({ prompt: 'a detour' });

    const redirected = await settled(api, viaRedirect.id, job.body.id);
    expect(redirected.status).toBe('succeeded');
    expect(redirected.attempts[0]).toMatchObject({ attempt: 1, response_status: 302, error: 'redirect not followed' });
    expect(redirected.attempts[1]).toMatchObject({ attempt: 2, response_status: 204, error: null });
    expect(elsewhere.received).toHaveLength(0);

    const timedOut = await settled(api, viaSlow.id, job.body.id);
    expect(timedOut.status).toBe('succeeded');
    expect(timedOut.attempts[0]).toMatchObject({ attempt: 1, response_status: null, error: expect.stringMatching(/timed out/) });
    expect(timedOut.attempts[0].duration_ms).toBeLessThan(2_900);
    expect(timedOut.attempts[1]).toMatchObject({ attempt: 2, response_status: 204 });
  });

  test('an endpoint gets only the events it subscribed to; failed and canceled jobs are delivered too', async () => {
    const everything = await receiver();
    const failuresOnly = await receiver();
    const api = await newUser();
    const all = await addEndpoint(api, { url: everything.url });
    const failures = await addEndpoint(api, { url: failuresOnly.url, events: ['generation.failed'], description: 'pager' });

    const ok = await api.submit({ prompt: 'a calm lake' });
    await api.waitForTerminal(ok.body.id);
    stack.setKnobs({ permanentFailureRate: 1 });
    let failed;
    try {
      failed = await api.submit({ prompt: 'something the backend refuses' });
      expect((await api.waitForTerminal(failed.body.id)).status).toBe('failed');
    } finally {
      stack.setKnobs({ permanentFailureRate: 0 });
    }
    stack.setKnobs({ p50Ms: 20_000, p99Ms: 30_000 });
    let canceled;
    try {
      canceled = await api.submit({ prompt: 'never mind' });
      await stack.client.workflow.getHandle(canceled.body.id).signal(cancelGenerationSignal, { reason: 'test' });
      expect((await api.waitForTerminal(canceled.body.id)).status).toBe('canceled');
    } finally {
      stack.setKnobs({ p50Ms: 300, p99Ms: 800 });
    }

    const types = (r: WebhookReceiver) => r.received.map((x) => JSON.parse(x.raw).type as string).sort();
    await everything.waitFor((r) => r.length >= 3);
    await failuresOnly.waitFor((r) => r.length >= 1);
    await notified(api, canceled.body.id);
    expect(types(everything)).toEqual(['generation.canceled', 'generation.failed', 'generation.succeeded']);
    expect(types(failuresOnly)).toEqual(['generation.failed']);
    expect(JSON.parse(failuresOnly.received[0].raw).data).toMatchObject({ id: failed.body.id, status: 'failed', error: { code: expect.any(String) } });
    expect((await deliveries(api, failures.id)).map((d) => d.generation_id)).toEqual([failed.body.id]);
    expect((await deliveries(api, all.id))).toHaveLength(3);
  });

  test('URLs pointing at private, loopback or link-local addresses are refused unless allow-listed', async () => {
    const api = await newUser();
    for (const url of ['http://10.0.0.7/hook', 'http://169.254.169.254/latest/meta-data', 'http://[fd00::1]/hook', 'http://[::ffff:192.168.0.1]/', 'ftp://example.com/']) {
      const res = await api.call('POST', '/v1/webhook-endpoints', { url });
      expect(res.status).toBe(400);
      expect(res.body.error.code).toBe('invalid_webhook_url');
    }
    const viaRequest = await api.submit({ prompt: 'sneaky', webhook_url: 'http://192.168.1.20/collect' });
    expect(viaRequest.status).toBe(400);
    expect(viaRequest.body.error).toMatchObject({ code: 'invalid_webhook_url', message: expect.stringContaining('webhook_url') });
    const badEvent = await api.call('POST', '/v1/webhook-endpoints', { url: 'http://127.0.0.1:9/hook', events: ['generation.exploded'] });
    expect(badEvent.status).toBe(400);
    // Loopback is allowed here because the test stack sets WEBHOOK_ALLOWED_HOSTS=127.0.0.0/8,::1,localhost.
    expect((await api.call('POST', '/v1/webhook-endpoints', { url: 'http://localhost:9/hook' })).status).toBe(201);
  });

  test('a rotated secret signs alongside the old one during the overlap; delete stops deliveries', async () => {
    const hooks = await receiver();
    const api = await newUser();
    const endpoint = await addEndpoint(api, { url: hooks.url });
    const rotated = await api.call('POST', `/v1/webhook-endpoints/${endpoint.id}/rotate-secret`, { overlap_seconds: 3600 });
    expect(rotated.status).toBe(200);
    expect(rotated.body.secret).toMatch(/^whsec_/);
    expect(rotated.body.secret).not.toBe(endpoint.secret);
    expect(rotated.body.previous_secret_expires_at).toEqual(expect.any(String));

    const job = await api.submit({ prompt: 'a changing of the guard' });
    const [delivery] = await hooks.waitFor((r) => r.length >= 1);
    const headers = delivery.headers as Record<string, string>;
    expect(headers['webhook-signature'].split(' ')).toHaveLength(2);
    expect(new Webhook(endpoint.secret).verify(delivery.raw, headers)).toMatchObject({ data: { id: job.body.id } });
    expect(new Webhook(rotated.body.secret).verify(delivery.raw, headers)).toMatchObject({ data: { id: job.body.id } });

    const ended = await api.call('POST', `/v1/webhook-endpoints/${endpoint.id}/rotate-secret`, { overlap_seconds: 0 });
    expect(ended.body.previous_secret_expires_at).toBeNull();

    expect((await api.call('DELETE', `/v1/webhook-endpoints/${endpoint.id}`)).body).toEqual({ id: endpoint.id, object: 'webhook_endpoint', deleted: true });
    expect((await api.call('GET', `/v1/webhook-endpoints/${endpoint.id}`)).status).toBe(404);
    expect((await api.call('GET', '/v1/webhook-endpoints')).body.data).toEqual([]);
    const after = await api.submit({ prompt: 'nobody listening' });
    await notified(api, after.body.id);
    expect(hooks.received).toHaveLength(1);
  });
});
