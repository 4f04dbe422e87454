import { generateKeyPairSync } from 'node:crypto';
import type { ConfiguredBackend } from '../../src/config';
import { FalBackend } from '../../src/backend/fal';
import { BackendRejectedError, BackendUnavailableError, isJobNotFound, type BackendSubmitRequest } from '../../src/backend/types';
import { WebhookVerificationError } from '../../src/lib/webhook-signature';
import { pollUntil } from '../simulator-helpers';
import { startFalFake, type FalFake } from '../fakes/fal';
import { startWebhookInbox, type WebhookInbox } from '../fakes/webhook-inbox';

/** The fal queue adapter over real HTTP against the fal fake (test/fakes/fal.ts). */
let fake: FalFake;
let inbox: WebhookInbox;
let backend: FalBackend;
let counter = 0;

type Spec = Extract<ConfiguredBackend, { kind: 'fal' }>;
const spec = (patch: Partial<Spec> = {}): Spec => ({
  name: 'fal-wan',
  kind: 'fal',
  base_url: fake.url,
  credentials_env: 'FAL_KEY',
  credentials: fake.key,
  capacity: 2,
  cost_factor: 1,
  model: 'fal-ai/wan/v2.2-a14b/text-to-video',
  jwks_url: fake.jwksUrl,
  renders: { image_input: false, video_input: false },
  ...patch,
});

beforeEach(async () => {
  fake = await startFalFake({ runMs: 200 });
  inbox = await startWebhookInbox();
  backend = new FalBackend(spec(), { callbackUrl: inbox.url, timeoutMs: 1_000 });
});

afterEach(async () => {
  await fake.close();
  await inbox.close();
});

const request = (prompt = 'a red fox in snow', patch: Partial<BackendSubmitRequest> = {}): BackendSubmitRequest => ({
  client_key: `job-${++counter}:run:1:attempt:1`,
  prompt,
  duration_seconds: 5,
  resolution: '720p',
  aspect_ratio: '16:9',
  seed: null,
  callback_url: 'wanted',
  ...patch,
});

const ended = (id: string) => pollUntil(() => backend.getJob(id), (j) => ['succeeded', 'failed', 'canceled'].includes(j.status), { timeoutMs: 5_000, what: 'the request to end' });

async function rejection(promise: Promise<unknown>): Promise<any> {
  return promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
    },
    (err: unknown) => err,
  );
}

describe('fal queue adapter', () => {
  it('queues with fal_webhook, follows status under the app (no sub-path), and reads the result', async () => {
    const req = request();
    const job = await backend.submit(req);
    expect(job).toMatchObject({ status: 'queued', client_key: req.client_key });
    const submit = fake.requests.find((r) => r.method === 'POST');
    expect(submit?.path).toBe('/fal-ai/wan/v2.2-a14b/text-to-video');
    expect(submit?.headers.authorization).toBe(`Key ${fake.key}`);
    expect(new URL(submit!.query.get('fal_webhook')!).searchParams.get('client_key')).toBe(req.client_key);
    expect(submit?.body).toEqual({ prompt: req.prompt, duration: 5, resolution: '720p', aspect_ratio: '16:9' });
    const done = await ended(job.id);
    expect(done).toMatchObject({ status: 'succeeded', error: null, video_url: `${fake.url}/files/${job.id}/video.mp4` });
    expect(fake.requests.some((r) => r.path === `/fal-ai/wan/requests/${job.id}/status`)).toBe(true);
  });

  it('verifies the ED25519-signed webhook against the JWKS and reads it; a tampered or foreign-signed one is refused', async () => {
    const req = request();
    const job = await backend.submit(req);
    const [hook] = await inbox.waitFor((r) => r.length >= 1);
    expect(await backend.verifyCallback(hook)).toMatchObject({ type: 'job.succeeded', clientKey: req.client_key, job: { id: job.id, video_url: `${fake.url}/files/${job.id}/video.mp4`, error: null } });
    expect(await rejection(backend.verifyCallback({ ...hook, rawBody: hook.rawBody.replace('"OK"', '"ERROR"') }))).toBeInstanceOf(WebhookVerificationError);
    const stranger = generateKeyPairSync('ed25519').privateKey;
    expect(await rejection(backend.verifyCallback({ ...hook, headers: fake.signWebhook(job.id, hook.rawBody, stranger) }))).toBeInstanceOf(WebhookVerificationError);
    const stale = { ...fake.signWebhook(job.id, hook.rawBody), 'x-fal-webhook-timestamp': String(Math.floor(Date.now() / 1000) - 3600) };
    expect(await rejection(backend.verifyCallback({ ...hook, headers: stale }))).toBeInstanceOf(WebhookVerificationError);
    // The key set was fetched once (plus once more for the unknown signature), not per webhook.
    expect(fake.requests.filter((r) => r.path === '/.well-known/jwks.json').length).toBeLessThanOrEqual(2);
  });

  it('maps failures (status error, result detail, webhook ERROR) to our codes', async () => {
    const cases = [
      ['[fake:fail=content]', 'content_policy_violation', false],
      ['[fake:fail=input]', 'invalid_input', false],
      ['[fake:fail=oom]', 'gpu_unavailable', true],
      ['[fake:fail=internal]', 'internal_error', true],
    ] as const;
    for (const [marker, code, retryable] of cases) {
      const job = await backend.submit(request(`a fox ${marker}`));
      expect(await ended(job.id)).toMatchObject({ status: 'failed', error: { code, retryable } });
      const hooks = await inbox.waitFor((r) => r.some((h) => h.headers['x-fal-webhook-request-id'] === job.id));
      const hook = hooks.find((h) => h.headers['x-fal-webhook-request-id'] === job.id)!;
      expect(await backend.verifyCallback(hook)).toMatchObject({ type: 'job.failed', job: { error: { code, retryable } } });
    }
  });

  it('cancels a request (CANCELLATION_REQUESTED), and answers one already completed as it ended', async () => {
    const hanging = await backend.submit(request('a fox [fake:hang]'));
    expect((await backend.cancel(hanging.id)).status).toBe('canceled');
    expect(fake.live()).toHaveLength(0);
    expect((await backend.getJob(hanging.id)).status).toBe('canceled');
    const quick = await backend.submit(request());
    await ended(quick.id);
    expect((await backend.cancel(quick.id)).status).toBe('succeeded');
  });

  it('with webhooks lost, polling still finds the ending; a duplicated webhook verifies and reads the same', async () => {
    fake.set({ loseCallbacks: true });
    const lost = await backend.submit(request());
    expect((await ended(lost.id)).status).toBe('succeeded');
    expect(fake.webhooks.sent).toBe(0);

    fake.set({ loseCallbacks: false, duplicateCallbacks: true });
    const twice = await backend.submit(request());
    const hooks = await inbox.waitFor((r) => r.length >= 2);
    const read = await Promise.all(hooks.map((h) => backend.verifyCallback(h)));
    expect(read.map((r) => [r.type, r.job.id])).toEqual([
      ['job.succeeded', twice.id],
      ['job.succeeded', twice.id],
    ]);
  });

  it('types HTTP failures: 422 rejected, a refused key/5xx/outage/slow unavailable, an unknown id lost', async () => {
    expect(await rejection(backend.submit(request('')))).toMatchObject({ name: 'BackendRejectedError', status: 422 });
    const wrongKey = new FalBackend(spec({ credentials: 'nope' }), { callbackUrl: inbox.url, timeoutMs: 1_000 });
    expect(await rejection(wrongKey.submit(request()))).toMatchObject({ name: 'BackendUnavailableError', status: 401 });
    fake.set({ fail5xxNext: 1 });
    expect(await rejection(backend.submit(request()))).toMatchObject({ name: 'BackendUnavailableError', status: 503 });
    fake.set({ slowMs: 1_500 });
    expect(await rejection(backend.getJob('x'))).toBeInstanceOf(BackendUnavailableError);
    fake.set({ slowMs: 0, outage: true });
    expect(await rejection(backend.getJob('x'))).toBeInstanceOf(BackendUnavailableError);
    fake.set({ outage: false });
    expect(isJobNotFound(await rejection(backend.getJob('00000000-0000-0000-0000-000000000000')))).toBe(true);
  });

  it('refuses, without calling fal, what it is configured not to render', async () => {
    const narrow = new FalBackend(spec({ renders: { resolutions: ['480p'], image_input: false, video_input: false } }), { callbackUrl: inbox.url, timeoutMs: 1_000 });
    expect(await rejection(narrow.submit(request()))).toBeInstanceOf(BackendRejectedError);
    expect(fake.requests).toHaveLength(0);
  });

  it('passes a start image as `image_url` and a remixed video as `video_url`, where its renders allow them, and refuses them elsewhere', async () => {
    const inputs = { input_reference: 'https://images.example/first-frame.png', remix_of: { job_id: 'gen_1', video_url: 'https://videos.example/1.mp4' } };
    expect((await rejection(backend.submit(request('a fox', { input_reference: inputs.input_reference })))).message).toMatch(/cannot render an image input/);
    expect(fake.requests).toHaveLength(0);
    const i2v = new FalBackend(spec({ renders: { image_input: true, video_input: true } }), { callbackUrl: inbox.url, timeoutMs: 1_000 });
    await i2v.submit(request('a fox', inputs));
    const submit = fake.requests.find((r) => r.method === 'POST');
    expect(submit?.body).toMatchObject({ prompt: 'a fox', image_url: inputs.input_reference, video_url: inputs.remix_of.video_url });
  });
});
