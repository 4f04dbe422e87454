import { Webhook } from 'standardwebhooks';
import { signedHeaders } from '../src/notifications/webhook-sender';
import { startWebhookReceiver, type WebhookReceiver } from './notification-helpers';
import { apiClient, eventually, startStack, type Stack } from './harness';

type Api = ReturnType<typeof apiClient>;

/** Signed webhooks end to end: a receiver built on the `standardwebhooks` library, retries on the (scaled) schedule. */
describe('signed webhooks with durable retries', () => {
  let stack: Stack;
  const receivers: WebhookReceiver[] = [];
  const receiver = async (...args: Parameters<typeof startWebhookReceiver>) => {
    const r = await startWebhookReceiver(...args);
    receivers.push(r);
    return r;
  };

  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(async () => {
    for (const r of receivers) await r.close();
    await stack?.close();
  });

  async function userWithEndpoint(url: string, events?: string[]) {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const created = await api.call('POST', '/v1/webhook-endpoints', { url, ...(events ? { events } : {}) });
    expect(created.status).toBe(201);
    return { api, endpoint: created.body as { id: string; secret: string } };
  }

  /** The endpoint's one delivery once it has stopped being attempted. */
  function settledDelivery(api: Api, endpointId: string, status = 'succeeded') {
    return eventually(
      async () => {
        const res = await api.call('GET', `/v1/webhook-endpoints/${endpointId}/deliveries`);
        const [delivery] = res.body.data;
        return delivery?.status === status ? delivery : undefined;
      },
      { what: `a ${status} delivery`, timeoutMs: 30_000 },
    );
  }

  test('a receiver verifying with the standardwebhooks library accepts every delivery, and rejects a tampered body or an old timestamp', async () => {
    const hooks = await receiver();
    const { api, endpoint } = await userWithEndpoint(hooks.url);
    expect(endpoint.secret).toMatch(/^whsec_/);
    const listed = await api.call('GET', '/v1/webhook-endpoints');
    expect(listed.body.data).toEqual([expect.objectContaining({ id: endpoint.id, url: hooks.url, status: 'enabled', events: [] })]);
    expect(listed.body.data[0].secret).toBeUndefined();

    // A per-request webhook_url too, signed with the user's request secret.
    const perRequest = await receiver();
    const { body: requestSecret } = await api.call('GET', '/v1/webhook-secret');
    const job = await api.submit({ prompt: 'a kite over the dunes', webhook_url: perRequest.url });
    expect(job.status).toBe(202);
    await api.waitForTerminal(job.body.id);
    const [delivery] = await hooks.waitFor((r) => r.length >= 1);
    const [requestDelivery] = await perRequest.waitFor((r) => r.length >= 1);

    const library = new Webhook(endpoint.secret);
    const headers = delivery.headers as Record<string, string>;
    const event = library.verify(delivery.raw, headers) as { type: string; timestamp: string; data: Record<string, unknown> };
    expect(event).toMatchObject({ type: 'generation.succeeded', data: { id: job.body.id, status: 'succeeded', video_url: expect.any(String) } });
    expect(headers['webhook-id']).toMatch(/^msg_/);
    expect(headers['content-type']).toBe('application/json');
    expect(new Webhook(requestSecret.secret).verify(requestDelivery.raw, requestDelivery.headers as Record<string, string>)).toMatchObject({
      type: 'generation.succeeded',
      data: { id: job.body.id },
    });
    expect(requestDelivery.headers['webhook-id']).toBe(headers['webhook-id']);

    const tampered = delivery.raw.replace('"succeeded"', '"failed"');
    expect(tampered).not.toBe(delivery.raw);
    expect(() => library.verify(tampered, headers)).toThrow();
    const anHourAgo = new Date(Date.now() - 3_600_000);
    const stale = signedHeaders(headers['webhook-id'], delivery.raw, [endpoint.secret], anHourAgo);
    expect(() => library.verify(delivery.raw, stale)).toThrow(/timestamp/i);
    expect(() => library.verify(delivery.raw, signedHeaders(headers['webhook-id'], delivery.raw, [endpoint.secret]))).not.toThrow();
    expect(() => new Webhook(requestSecret.secret).verify(delivery.raw, headers)).toThrow();

    const inbox = await api.call('GET', '/v1/notifications');
    expect(inbox.body.data.filter((n: { generation_id: string }) => n.generation_id === job.body.id)).toHaveLength(1);
  });

  test('a receiver that fails the first 3 attempts gets the event with one webhook-id each time, and the log shows every attempt', async () => {
    const hooks = await receiver((n) => ({ status: n <= 3 ? 503 : 204 }));
    const { api, endpoint } = await userWithEndpoint(hooks.url);
    const job = await api.submit({ prompt: 'a paper plane over a city' });

    const received = await hooks.waitFor((r) => r.length >= 4);
    expect(received.map((r) => r.status)).toEqual([503, 503, 503, 204]);
    expect(new Set(received.map((r) => r.headers['webhook-id'])).size).toBe(1);
    const library = new Webhook(endpoint.secret);
    for (const r of received) expect(() => library.verify(r.raw, r.headers as Record<string, string>)).not.toThrow();

    const delivery = await settledDelivery(api, endpoint.id);
    expect(delivery).toMatchObject({ generation_id: job.body.id, event_type: 'generation.succeeded', webhook_id: received[0].headers['webhook-id'], attempt_count: 4 });
    expect(delivery.attempts.map((a: { attempt: number; response_status: number }) => [a.attempt, a.response_status])).toEqual([
      [1, 503],
      [2, 503],
      [3, 503],
      [4, 204],
    ]);
    expect(hooks.received).toHaveLength(4);
  });

  test('a receiver that never succeeds ends failed after the whole schedule; a manual replay then delivers the same webhook-id', async () => {
    let healthy = false;
    const hooks = await receiver(() => ({ status: healthy ? 200 : 500 }));
    const { api, endpoint } = await userWithEndpoint(hooks.url);
    await api.submit({ prompt: 'a lighthouse that never answers' });

    const failed = await settledDelivery(api, endpoint.id, 'failed');
    expect(failed.attempts.map((a: { response_status: number }) => a.response_status)).toEqual(Array(8).fill(500));
    expect(failed.next_attempt_at).toBeNull();
    expect(hooks.received).toHaveLength(8);

    healthy = true;
    const replay = await api.call('POST', `/v1/webhook-endpoints/${endpoint.id}/deliveries/${failed.id}/replay`);
    expect(replay.status).toBe(202);
    expect(replay.body).toMatchObject({ id: failed.id, status: 'pending' });
    const replayed = await settledDelivery(api, endpoint.id, 'succeeded');
    expect(replayed.attempts.map((a: { attempt: number; response_status: number }) => [a.attempt, a.response_status]).slice(-2)).toEqual([
      [8, 500],
      [9, 200],
    ]);
    const received = await hooks.waitFor((r) => r.length >= 9);
    expect(new Set(received.map((r) => r.headers['webhook-id'])).size).toBe(1);

    const again = await api.call('POST', `/v1/webhook-endpoints/${endpoint.id}/deliveries/${failed.id}/replay`);
    expect(again.status).toBe(202);
    const notMine = await apiClient(stack.apiUrl, (await stack.createUser()).apiKey).call('POST', `/v1/webhook-endpoints/${endpoint.id}/deliveries/${failed.id}/replay`);
    expect(notMine.status).toBe(404);
  });
});
