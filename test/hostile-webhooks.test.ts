import { randomBytes } from 'node:crypto';
import { startWebhookReceiver, type WebhookReceiver } from './notification-helpers';
import { apiClient, eventually, startStack, type Stack } from './harness';
import { startApiWith, type ApiProcess } from './hostile-helpers';

/** Webhook endpoints and replays under a user who floods them: replays are limited, the endpoint cap holds under a race. */
describe('webhooks under hostile clients', () => {
  let stack: Stack;
  let receiver: WebhookReceiver;
  const apis: ApiProcess[] = [];
  const api = async (overrides: Parameters<typeof startApiWith>[1]) => {
    const started = await startApiWith(stack, overrides);
    apis.push(started);
    return started;
  };

  beforeAll(async () => {
    stack = await startStack();
    receiver = await startWebhookReceiver();
  });
  afterAll(async () => {
    for (const a of apis) await a.close({ graceMs: 0 });
    await receiver?.close();
    await stack?.close();
  });

  /** An endpoint of the user and one finished delivery to it, written as the notify step writes it. */
  async function finishedDelivery(url: string, apiKey: string, userId: string) {
    const endpoint = await apiClient(url, apiKey).call('POST', '/v1/webhook-endpoints', { url: receiver.url });
    expect(endpoint.status).toBe(201);
    const id = `whd_test_${randomBytes(6).toString('hex')}`;
    await stack.database.sql`
      insert into webhook_deliveries (id, user_id, job_id, endpoint_id, event_type, webhook_id, url, body, status, attempts)
      values (${id}, ${userId}, 'gen_replayed', ${endpoint.body.id}, 'generation.succeeded', ${`msg_${id}`}, ${receiver.url}, '{}', 'succeeded', 1)`;
    return { path: `/v1/webhook-endpoints/${endpoint.body.id}/deliveries/${id}/replay`, id };
  }

  const statusOf = async (id: string) => (await stack.database.sql<{ status: string }[]>`select status from webhook_deliveries where id = ${id}`)[0].status;

  test('a delivery is replayed at most WEBHOOK_MAX_REPLAYS times', async () => {
    const { url } = await api({ notifications: { webhookMaxReplays: 2 } });
    const user = await stack.createUser('pro');
    const client = apiClient(url, user.apiKey);
    const delivery = await finishedDelivery(url, user.apiKey, user.userId);
    for (let i = 0; i < 2; i++) {
      expect((await client.call('POST', delivery.path)).status).toBe(202);
      await eventually(async () => ((await statusOf(delivery.id)) === 'succeeded' ? true : undefined), { what: `replay ${i + 1} to finish` });
    }
    const third = await client.call('POST', delivery.path);
    expect(third).toMatchObject({ status: 409, body: { error: { code: 'replay_limit_reached', details: { limit: 2 } } } });
  });

  test("a user's replays are paced: a flood is answered 429 with Retry-After before anything is read", async () => {
    const { url } = await api({ notifications: { webhookReplaysPerMinute: 3 } });
    const user = await stack.createUser('pro');
    const client = apiClient(url, user.apiKey);
    const delivery = await finishedDelivery(url, user.apiKey, user.userId);
    const answers = [];
    for (let i = 0; i < 8; i++) answers.push(await client.call('POST', delivery.path));
    const codes = answers.map((a) => (a.status === 202 ? '202' : `${a.status} ${a.body.error.code}`));
    expect(codes.slice(3)).toEqual(Array(5).fill('429 replay_rate_limited'));
    expect(codes.slice(0, 3).every((c) => c === '202' || c === '409 delivery_in_progress')).toBe(true);
    expect(Number(answers[7].headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // Another user is not paced by this one.
    const other = await stack.createUser('pro');
    const theirs = await finishedDelivery(url, other.apiKey, other.userId);
    expect((await apiClient(url, other.apiKey).call('POST', theirs.path)).status).toBe(202);
  });

  test('many concurrent creates never pass the cap of 20 endpoints per user', async () => {
    const user = await stack.createUser('pro');
    const client = apiClient(stack.apiUrl, user.apiKey);
    const answers = await Promise.all(Array.from({ length: 40 }, (_, i) => client.call('POST', '/v1/webhook-endpoints', { url: `${receiver.url}?n=${i}` })));
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses).toEqual([...Array(20).fill(201), ...Array(20).fill(409)]);
    expect(answers.filter((a) => a.status === 409).every((a) => a.body.error.code === 'too_many_endpoints')).toBe(true);
    const [{ count }] = await stack.database.sql<{ count: number }[]>`select count(*)::int as count from webhook_endpoints where user_id = ${user.userId} and deleted_at is null`;
    expect(count).toBe(20);
  });
});
