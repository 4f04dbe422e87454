import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import type { Generation, StreamEvent } from '../clients/typescript/src/index.js' with { 'resolution-mode': 'import' };
import { startWebhookReceiver, type WebhookReceiver } from './notification-helpers';
import { eventually, startStack, type Stack } from './harness';
import { startTcpProxy, type TcpProxy } from './tcp-proxy';

/**
 * The TypeScript client package (clients/typescript) against the real service: every method through the API, Temporal,
 * Postgres and the simulator, the event stream through a proxy that drops it, and a real signed webhook delivery.
 */

type ClientModule = typeof import('../clients/typescript/src/index.js', { with: { 'resolution-mode': 'import' } });

interface Exchange {
  method: string;
  url: string;
  headers: Headers;
  status: number;
  at: number;
}

/** A fetch that records each request and the status it got, to see what the client sent on the wire. */
function recordingFetch(): { fetch: typeof fetch; exchanges: Exchange[] } {
  const exchanges: Exchange[] = [];
  return {
    exchanges,
    fetch: async (input, init) => {
      const request = input instanceof Request ? input : new Request(input, init);
      const headers = new Headers(request.headers);
      const response = await fetch(request);
      exchanges.push({ method: request.method, url: request.url, headers, status: response.status, at: Date.now() });
      return response;
    },
  };
}

describe('the TypeScript client (clients/typescript) against the real service', () => {
  let stack: Stack;
  let sdk: ClientModule;
  let receiver: WebhookReceiver;
  const clientFor = async (options: { retryRateLimited?: boolean; baseUrl?: string; fetch?: typeof fetch } = {}) => {
    const { apiKey } = await stack.createUser('pro');
    return sdk.createVideogenClient({ baseUrl: stack.apiUrl, apiKey, ...options });
  };

  beforeAll(async () => {
    sdk = await import('../clients/typescript/src/index.js');
    // One estimate at once per user, and one Prefer: wait: enough to draw a 429 on purpose.
    [stack, receiver] = await Promise.all([
      startStack({ env: { ESTIMATE_BURST: '1', ESTIMATES_PER_SECOND: '1', PREFER_WAIT_MAX_PER_USER: '1' } }),
      startWebhookReceiver(),
    ]);
  });
  afterAll(async () => {
    await receiver?.close();
    await stack?.close();
  });

  test('create then get: the job the submit answered is the one read back, and it ends', async () => {
    const client = await clientFor();
    const job = await client.generations.create({ prompt: 'a red fox running through snow', duration_seconds: 4 });
    expect(job).toMatchObject({ object: 'generation', status: 'queued', prompt: 'a red fox running through snow', duration_seconds: 4 });
    const read = await client.generations.get(job.id);
    expect(read.id).toBe(job.id);
    const ended = await client.generations.get(job.id, { waitSeconds: 30 });
    expect(ended).toMatchObject({ id: job.id, status: 'succeeded', video_url: expect.stringMatching(/^https:\/\//) });
  });

  test('the same idempotency key twice is one job', async () => {
    const client = await clientFor();
    const first = await client.generations.create({ prompt: 'a lighthouse' }, { idempotencyKey: 'client-test-key-1' });
    const again = await client.generations.create({ prompt: 'a lighthouse' }, { idempotencyKey: 'client-test-key-1' });
    expect(again.id).toBe(first.id);
  });

  test('batches: created whole, read with their counts, listed, their items iterated, canceled', async () => {
    const client = await clientFor();
    const items = Array.from({ length: 3 }, (_, i) => ({ prompt: `batch item ${i}`, duration_seconds: 2 }));
    const batch = await client.batches.create({ items }, { idempotencyKey: 'client-batch-1' });
    expect(batch).toMatchObject({ object: 'batch', total: 3 });
    expect((await client.batches.create({ items }, { idempotencyKey: 'client-batch-1' })).id).toBe(batch.id);
    const read = await client.batches.get(batch.id);
    expect(Object.values(read.counts).reduce((a, b) => a + b, 0)).toBe(3);
    const listed: string[] = [];
    for await (const b of client.batches.list({ limit: 1 })) listed.push(b.id);
    expect(listed).toContain(batch.id);
    const itemIds: string[] = [];
    for await (const item of client.batches.items(batch.id, { limit: 2 })) {
      expect(item.batch_id).toBe(batch.id);
      itemIds.push(item.id);
    }
    expect(new Set(itemIds).size).toBe(3);
    const canceled = await client.batches.cancel(batch.id).catch((err: unknown) => err);
    // Either it canceled what had not ended, or every item had ended already (a typed 409).
    if (canceled instanceof sdk.VideogenError) expect(canceled).toMatchObject({ status: 409, code: 'batch_already_completed' });
    else expect(canceled).toMatchObject({ id: batch.id, object: 'batch' });
  });

  test('list is an async iterator over every page, newest first', async () => {
    const { fetch: recording, exchanges } = recordingFetch();
    const client = await clientFor({ fetch: recording });
    const created: Generation[] = [];
    for (let i = 0; i < 5; i++) created.push(await client.generations.create({ prompt: `page test ${i}` }));
    const listed: Generation[] = [];
    for await (const job of client.generations.list({ limit: 2 })) listed.push(job);
    expect(listed.map((j) => j.id)).toEqual(created.map((j) => j.id).reverse());
    const pages = exchanges.filter((e) => e.method === 'GET' && new URL(e.url).pathname === '/v1/generations');
    expect(pages).toHaveLength(3);
    expect(new URL(pages[1].url).searchParams.get('cursor')).toBeTruthy();
  });

  test('createAndWait answers the ended job through Prefer: wait', async () => {
    const { fetch: recording, exchanges } = recordingFetch();
    const client = await clientFor({ fetch: recording });
    const job = await client.generations.createAndWait({ prompt: 'a paper boat on a river' }, { timeoutSeconds: 30 });
    expect(job).toMatchObject({ status: 'succeeded', video_url: expect.any(String) });
    expect(exchanges.map((e) => [e.method, new URL(e.url).pathname, e.status, e.headers.get('prefer')])).toEqual([['POST', '/v1/generations', 200, 'wait=30']]);
  });

  test('createAndWait follows the event stream when the server refuses another wait', async () => {
    const { fetch: recording, exchanges } = recordingFetch();
    const client = await clientFor({ fetch: recording });
    const hanging = await client.generations.create({ prompt: 'a clock that never stops [hang]' });
    // A wait on a job that never ends holds the user's only Prefer: wait slot; a second wait proves it is held (when the
    // second one won the race for the slot, both are let go and tried again).
    let holder = new AbortController();
    let held: Promise<unknown> = Promise.resolve();
    await eventually(
      async () => {
        holder = new AbortController();
        held = client.generations.get(hanging.id, { waitSeconds: 60, signal: holder.signal }).catch(() => undefined);
        const probe = await client.generations.get(hanging.id, { waitSeconds: 1 }).catch((err: unknown) => err);
        if (probe instanceof sdk.VideogenError && probe.code === 'too_many_waits') return true;
        holder.abort();
        await held;
        return undefined;
      },
      { what: 'the wait slot to be held' },
    );
    exchanges.length = 0;
    const job = await client.generations.createAndWait({ prompt: 'a kite in the wind [slow]' }, { timeoutSeconds: 60 });
    holder.abort();
    await held;
    expect(job.status).toBe('succeeded');
    const calls = exchanges.map((e) => [e.method, new URL(e.url).pathname, e.status, e.headers.get('prefer') ?? undefined]);
    expect(calls.slice(0, 4)).toEqual([
      ['POST', '/v1/generations', 429, 'wait=60'],
      ['POST', '/v1/generations', 202, undefined],
      ['GET', `/v1/generations/${job.id}/events`, 200, undefined],
      ['GET', `/v1/generations/${job.id}`, 200, undefined],
    ]);
    // Both submits carried one idempotency key: the refused one submitted nothing, the second made the job.
    expect(exchanges[0].headers.get('idempotency-key')).toBe(exchanges[1].headers.get('idempotency-key'));
    await client.generations.cancel(hanging.id);
  });

  test('events() resumes with Last-Event-ID after the connection drops, missing and repeating nothing', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = new URL(stack.apiUrl);
    const proxy: TcpProxy = await startTcpProxy({ host: api.hostname, port: Number(api.port) });
    const { fetch: recording, exchanges } = recordingFetch();
    const direct = sdk.createVideogenClient({ baseUrl: stack.apiUrl, apiKey });
    const proxied = sdk.createVideogenClient({ baseUrl: `http://127.0.0.1:${proxy.port}`, apiKey, fetch: recording });
    const streamUp = () => exchanges.some((e) => new URL(e.url).pathname === '/v1/events' && e.status === 200) || undefined;
    try {
      const seen: StreamEvent[] = [];
      let firstJobEvent: string | undefined;
      const stop = new AbortController();
      const reading = (async () => {
        for await (const event of proxied.events({ signal: stop.signal })) {
          if (!('generation_id' in event.data) || event.id === undefined) continue;
          seen.push(event);
          if (firstJobEvent === undefined) {
            // The first event of the job: drop every connection, let the job end meanwhile, then let the client back.
            firstJobEvent = event.id;
            await proxy.cut();
            await direct.generations.get(event.data.generation_id, { waitSeconds: 60 });
            await proxy.restore();
          }
          if (sdk.isTerminal((event.data as { status: Generation['status'] }).status)) return;
        }
      })();
      await eventually(async () => streamUp(), { what: 'the event stream to open' });
      const job = await direct.generations.create({ prompt: 'a river that bends [slow]' });
      await reading;
      stop.abort();

      // The stream of this one job, replayed from its first event, is what the dropped stream should have shown.
      const replay: StreamEvent[] = [];
      for await (const event of direct.events({ generationId: job.id })) {
        if (event.id === undefined) continue;
        replay.push(event);
        if (sdk.isTerminal((event.data as { status: Generation['status'] }).status)) break;
      }
      expect(replay.length).toBeGreaterThan(2);
      expect(seen.map((e) => [e.id, e.type])).toEqual(replay.map((e) => [e.id, e.type]));
      // It came back with the id of the last event it had read (events already buffered when the line dropped are read
      // too), and the job's end, which happened while it was cut off, came over the resumed connection.
      const reconnects = exchanges.filter((e) => new URL(e.url).pathname === '/v1/events' && e.headers.get('last-event-id') !== null);
      expect(reconnects.length).toBeGreaterThanOrEqual(1);
      const resumedAfter = reconnects[0].headers.get('last-event-id')!;
      expect(seen.map((e) => e.id)).toContain(resumedAfter);
      expect(Number(resumedAfter)).toBeGreaterThanOrEqual(Number(firstJobEvent));
      expect(Number(seen[seen.length - 1].id)).toBeGreaterThan(Number(resumedAfter));
    } finally {
      await proxy.close();
    }
  });

  test('cancel ends a job; retry reruns it as a new job naming it', async () => {
    const client = await clientFor();
    const job = await client.generations.create({ prompt: 'a river that never ends [hang]' });
    const canceling = await client.generations.cancel(job.id);
    expect(['canceled', 'queued', 'running']).toContain(canceling.status);
    const canceled = await client.generations.get(job.id, { waitSeconds: 30 });
    expect(canceled).toMatchObject({ status: 'canceled', error: { code: 'canceled_by_user' } });

    const rerun = await client.generations.retry(job.id);
    expect(rerun).toMatchObject({ retry_of: job.id, prompt: job.prompt });
    expect(rerun.id).not.toBe(job.id);
    await client.generations.cancel(rerun.id);
  });

  test('error answers are thrown as VideogenError with the API code, status and message', async () => {
    const client = await clientFor();
    const invalid = await client.generations.create({ prompt: '' }).catch((err: unknown) => err);
    expect(invalid).toBeInstanceOf(sdk.VideogenError);
    expect(invalid).toMatchObject({ status: 400, code: 'invalid_request', message: expect.stringContaining('prompt') });
    await expect(client.generations.get('gen_does_not_exist')).rejects.toMatchObject({ status: 404, code: 'not_found' });
    const finished = await client.generations.createAndWait({ prompt: 'a quick one' }, { timeoutSeconds: 30 });
    await expect(client.generations.cancel(finished.id)).rejects.toMatchObject({ status: 409, code: 'generation_already_finished' });
    const stranger = sdk.createVideogenClient({ baseUrl: stack.apiUrl, apiKey: 'vg_not-a-key' });
    await expect(stranger.usage()).rejects.toMatchObject({ status: 401, code: 'unauthorized' });
  });

  test("a 429 is thrown with its Retry-After, or retried after it when asked", async () => {
    const { apiKey } = await stack.createUser('pro');
    const body = { prompt: 'how much would this cost' };
    const plain = sdk.createVideogenClient({ baseUrl: stack.apiUrl, apiKey });
    const refused = await Promise.all([plain.generations.estimate(body), plain.generations.estimate(body)].map((p) => p.catch((err: unknown) => err)));
    const error = refused.find((r) => r instanceof sdk.VideogenError);
    expect(error).toMatchObject({ status: 429, code: 'estimate_rate_limited', retryAfter: expect.any(Number) });

    const { fetch: recording, exchanges } = recordingFetch();
    const patient = sdk.createVideogenClient({ baseUrl: stack.apiUrl, apiKey, fetch: recording, retryRateLimited: { maxRetries: 5 } });
    const estimates = await Promise.all([1, 2, 3].map(() => patient.generations.estimate(body)));
    expect(estimates.every((e) => typeof e.credits === 'number')).toBe(true);
    const statuses = exchanges.map((e) => e.status);
    expect(statuses.filter((s) => s === 429).length).toBeGreaterThan(0);
    expect(statuses.filter((s) => s === 200)).toHaveLength(3);
    // Each retry came no sooner than the Retry-After (1 s) of the refusal before it.
    const first429 = exchanges.find((e) => e.status === 429)!;
    expect(Math.max(...exchanges.filter((e) => e.status === 200).map((e) => e.at)) - first429.at).toBeGreaterThanOrEqual(900);
  });

  test('usage and notification settings', async () => {
    const client = await clientFor();
    const usage = await client.usage();
    expect(usage).toMatchObject({ tier: 'pro', credits: { available: expect.any(Number) } });
    const settings = await client.notificationSettings.update({ email: 'someone@example.test', on: ['failed'], digest_seconds: 0 });
    expect(settings).toMatchObject({ object: 'notification_settings', email: 'someone@example.test', email_verified: false, on: ['failed'], digest_seconds: 0 });
    expect(await client.notificationSettings.get()).toEqual(settings);
  });

  test('webhooks.verify accepts a real delivery and refuses a tampered one', async () => {
    const client = await clientFor();
    const endpoint = await client.http.POST('/v1/webhook-endpoints', { body: { url: receiver.url } });
    const secret = endpoint.data?.secret;
    expect(secret).toMatch(/^whsec_/);
    const job = await client.generations.createAndWait({ prompt: 'a signed delivery' }, { timeoutSeconds: 30 });
    const [delivery] = (await receiver.waitFor((all) => all.some((w) => w.raw.includes(job.id)))).filter((w) => w.raw.includes(job.id));

    const event = await client.webhooks.verify(delivery.raw, delivery.headers, secret!);
    expect(event).toMatchObject({ type: 'generation.succeeded', data: { id: job.id, status: 'succeeded' } });

    const tampered = delivery.raw.replace('"succeeded"', '"failed"');
    await expect(client.webhooks.verify(tampered, delivery.headers, secret!)).rejects.toBeInstanceOf(sdk.WebhookVerificationError);
    const otherSecret = `whsec_${Buffer.alloc(24, 7).toString('base64')}`;
    await expect(client.webhooks.verify(delivery.raw, delivery.headers, otherSecret)).rejects.toBeInstanceOf(sdk.WebhookVerificationError);
    const stale = { ...delivery.headers, 'webhook-timestamp': String(Math.floor(Date.now() / 1000) - 3600) };
    await expect(client.webhooks.verify(delivery.raw, stale, secret!)).rejects.toThrow(/tolerance/);
  });

  test("the package's example (the README's) runs as written on plain Node, built, against the service", async () => {
    const root = path.resolve(__dirname, '..');
    // Not execFileSync: the stack's API runs in this process, and a blocked event loop drops its kept-alive connections.
    await promisify(execFile)('bash', [path.join(root, 'scripts/client-build.sh')]);
    const { apiKey } = await stack.createUser('pro');
    const { stdout } = await promisify(execFile)(process.execPath, [path.join(root, 'clients/typescript/examples/quickstart.mjs')], {
      env: { ...process.env, VIDEOGEN_URL: stack.apiUrl, VIDEOGEN_API_KEY: apiKey },
      timeout: 60_000,
    });
    const lines = stdout.trim().split('\n');
    expect(lines[0]).toBe('generation.queued 0%');
    expect(lines).toContain('generation.succeeded 100%');
    expect(lines[lines.length - 1]).toMatch(/^gen_\S+ succeeded https:\/\/\S+\.mp4 \d+ credits$/);
  });
});
