import { Webhook } from 'standardwebhooks';
import { generateWebhookSecret } from '../lib/webhook-signature';
import { allowedHostsSetting, NO_ALLOWED_HOSTS } from '../lib/ip-addresses';
import { deliveryIdFor, retryScheduleMs, webhookIdFor, WEBHOOK_RETRY_SCHEDULE_MS } from './events';
import { startWebhookReceiver, type WebhookReceiver } from '../../test/notification-helpers';
import { sendWebhook, signedHeaders } from './webhook-sender';

const loopback = allowedHostsSetting.parse('127.0.0.0/8');

describe('one webhook POST', () => {
  const receivers: WebhookReceiver[] = [];
  afterAll(async () => {
    for (const r of receivers) await r.close();
  });
  const receiver = async (...args: Parameters<typeof startWebhookReceiver>) => {
    const r = await startWebhookReceiver(...args);
    receivers.push(r);
    return r;
  };
  const send = (url: string, secrets: string[], extra: Partial<Parameters<typeof sendWebhook>[0]> = {}) =>
    sendWebhook({ url, webhookId: 'msg_test', body: '{"type":"generation.succeeded"}', secrets, timeoutMs: 1_000, allowedHosts: loopback, ...extra });

  test('is signed so that the standardwebhooks library verifies it, with every secret of a rotation', async () => {
    const hooks = await receiver();
    const [current, previous] = [generateWebhookSecret(), generateWebhookSecret()];
    const response = await send(hooks.url, [current, previous]);
    expect(response).toMatchObject({ status: 204, error: null });
    const [{ raw, headers }] = hooks.received;
    for (const secret of [current, previous]) expect(new Webhook(secret).verify(raw, headers as Record<string, string>)).toEqual({ type: 'generation.succeeded' });
    expect(() => new Webhook(generateWebhookSecret()).verify(raw, headers as Record<string, string>)).toThrow();
  });

  test('does not follow a redirect, gives up on a slow receiver, and reports a refused destination without sending', async () => {
    const target = await receiver();
    const redirecting = await receiver(() => ({ status: 307, headers: { location: target.url } }));
    expect(await send(redirecting.url, [generateWebhookSecret()])).toMatchObject({ status: 307, error: 'redirect not followed' });
    expect(target.received).toHaveLength(0);

    const slow = await receiver(() => ({ status: 200, delayMs: 2_000 }));
    const timedOut = await send(slow.url, [generateWebhookSecret()], { timeoutMs: 200 });
    expect(timedOut).toMatchObject({ status: null, error: 'timed out after 200 ms' });
    expect(timedOut.durationMs).toBeLessThan(1_500);

    const refused = await send(target.url, [generateWebhookSecret()], { allowedHosts: NO_ALLOWED_HOSTS });
    expect(refused).toMatchObject({ status: null, error: expect.stringMatching(/^refused destination: 127\.0\.0\.1 is not a public address/) });
    expect(target.received).toHaveLength(0);
  });

  test('signed headers carry one timestamp and one v1 signature per secret', () => {
    const headers = signedHeaders('msg_1', '{}', [generateWebhookSecret(), generateWebhookSecret()], new Date(1_700_000_000_000));
    expect(headers['webhook-timestamp']).toBe('1700000000');
    expect(headers['webhook-signature']).toMatch(/^v1,\S+ v1,\S+$/);
  });
});

describe('webhook identities and the retry schedule', () => {
  test('the webhook-id of an event is stable and distinct per job and event; deliveries differ per destination', () => {
    expect(webhookIdFor('gen_1', 'generation.succeeded')).toBe(webhookIdFor('gen_1', 'generation.succeeded'));
    expect(webhookIdFor('gen_1', 'generation.succeeded')).not.toBe(webhookIdFor('gen_1', 'generation.failed'));
    expect(webhookIdFor('gen_1', 'generation.succeeded')).not.toBe(webhookIdFor('gen_2', 'generation.succeeded'));
    const id = webhookIdFor('gen_1', 'generation.succeeded');
    expect(deliveryIdFor(id, 'we_1')).not.toBe(deliveryIdFor(id, null));
    expect(deliveryIdFor(id, null)).toBe(deliveryIdFor(id, null));
  });

  test('the schedule is Svix-like and scales for tests', () => {
    expect(WEBHOOK_RETRY_SCHEDULE_MS.map((ms) => ms / 1000)).toEqual([0, 5, 300, 1800, 7200, 18000, 36000, 36000]);
    expect(retryScheduleMs(1)).toEqual(WEBHOOK_RETRY_SCHEDULE_MS);
    expect(retryScheduleMs(0.001)).toEqual([0, 5, 300, 1800, 7200, 18000, 36000, 36000]);
  });
});
