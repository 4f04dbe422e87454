import type { ConfiguredBackend } from '../../src/config';
import { ReplicateBackend } from '../../src/backend/replicate';
import { BackendRejectedError, BackendUnavailableError, isJobNotFound, type BackendSubmitRequest } from '../../src/backend/types';
import { WebhookVerificationError } from '../../src/lib/webhook-signature';
import { pollUntil } from '../simulator-helpers';
import { startReplicateFake, type ReplicateFake } from '../fakes/replicate';
import { startWebhookInbox, type WebhookInbox } from '../fakes/webhook-inbox';

/** The Replicate adapter over real HTTP against the Replicate fake (test/fakes/replicate.ts). */
let fake: ReplicateFake;
let inbox: WebhookInbox;
let backend: ReplicateBackend;
let counter = 0;

type Spec = Extract<ConfiguredBackend, { kind: 'replicate' }>;
const spec = (patch: Partial<Spec> = {}): Spec => ({
  name: 'replicate-wan',
  kind: 'replicate',
  base_url: fake.url,
  credentials_env: 'REPLICATE_API_TOKEN',
  credentials: fake.token,
  capacity: 2,
  cost_factor: 1,
  model: 'wan-video/wan-2.2-t2v-fast',
  renders: { resolutions: ['480p', '720p'], image_input: false, video_input: false },
  ...patch,
});

beforeEach(async () => {
  fake = await startReplicateFake({ runMs: 200 });
  inbox = await startWebhookInbox();
  backend = new ReplicateBackend(spec(), { callbackUrl: inbox.url, timeoutMs: 1_000 });
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
  seed: 7,
  callback_url: 'wanted',
  ...patch,
});

const ended = (id: string) => pollUntil(() => backend.getJob(id), (j) => ['succeeded', 'failed', 'canceled'].includes(j.status), { timeoutMs: 5_000, what: 'the prediction to end' });

async function rejection(promise: Promise<unknown>): Promise<any> {
  return promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
    },
    (err: unknown) => err,
  );
}

describe('Replicate adapter', () => {
  it('creates a prediction by model with a webhook and the start/completed filter, and polls it to its video', async () => {
    const req = request();
    const job = await backend.submit(req);
    expect(job).toMatchObject({ status: 'queued', client_key: req.client_key });
    const create = fake.requests.find((r) => r.method === 'POST');
    expect(create?.path).toBe('/v1/models/wan-video/wan-2.2-t2v-fast/predictions');
    const body = create?.body as { input: Record<string, unknown>; webhook: string; webhook_events_filter: string[] };
    expect(body.input).toEqual({ prompt: req.prompt, duration: 5, resolution: '720p', aspect_ratio: '16:9', seed: 7 });
    expect(body.webhook_events_filter).toEqual(['start', 'completed']);
    expect(new URL(body.webhook).searchParams.get('client_key')).toBe(req.client_key);

    const done = await ended(job.id);
    expect(done).toMatchObject({ id: job.id, status: 'succeeded', progress: 1, error: null });
    expect(done.video_url).toMatch(/output\.mp4$/);
  });

  it('creates by version through /v1/predictions when the model pins one', async () => {
    const pinned = new ReplicateBackend(spec({ model: 'owner/model:5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa' }), { callbackUrl: inbox.url, timeoutMs: 1_000 });
    await pinned.submit(request());
    const create = fake.requests.find((r) => r.method === 'POST');
    expect(create?.path).toBe('/v1/predictions');
    expect((create?.body as { version: string }).version).toBe('5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa');
  });

  it('verifies its signed webhooks (secret asked of the API once) and reads start and completion', async () => {
    const req = request();
    const job = await backend.submit(req);
    const hooks = await inbox.waitFor((r) => r.length >= 2);
    const read = await Promise.all(hooks.map((h) => backend.verifyCallback(h)));
    expect(read.map((r) => r.type)).toEqual(['job.started', 'job.succeeded']);
    expect(read[1]).toMatchObject({ clientKey: req.client_key, job: { id: job.id, error: null } });
    expect(read[1].job.video_url).toMatch(/output\.mp4$/);
    expect(fake.requests.filter((r) => r.path === '/v1/webhooks/default/secret')).toHaveLength(1);

    const forged = { ...hooks[1], rawBody: hooks[1].rawBody.replace('succeeded', 'failed') };
    expect(await rejection(backend.verifyCallback(forged))).toBeInstanceOf(WebhookVerificationError);
    const unsigned = { ...hooks[1], headers: { ...hooks[1].headers, 'webhook-signature': 'v1,AAAA' } };
    expect(await rejection(backend.verifyCallback(unsigned))).toBeInstanceOf(WebhookVerificationError);
  });

  it('maps failures to our codes: safety filter and bad input are final, out of memory is worth another attempt', async () => {
    const cases = [
      ['[fake:fail=content]', 'content_policy_violation', false],
      ['[fake:fail=input]', 'invalid_input', false],
      ['[fake:fail=oom]', 'gpu_unavailable', true],
      ['[fake:fail=internal]', 'internal_error', true],
    ] as const;
    for (const [marker, code, retryable] of cases) {
      const done = await ended((await backend.submit(request(`a fox ${marker}`))).id);
      expect(done).toMatchObject({ status: 'failed', error: { code, retryable } });
    }
  });

  it('cancels a running prediction: canceled, and nothing of ours is left running there', async () => {
    const job = await backend.submit(request('a fox [fake:hang]'));
    await pollUntil(() => backend.getJob(job.id), (j) => j.status === 'running', { what: 'processing' });
    expect((await backend.cancel(job.id)).status).toBe('canceled');
    expect(fake.live()).toHaveLength(0);
    const hooks = await inbox.waitFor((r) => r.length >= 2);
    expect((await backend.verifyCallback(hooks[1])).type).toBe('job.canceled');
  });

  it('with webhooks lost, polling still finds the ending; duplicated webhooks carry one id per event', async () => {
    fake.set({ loseCallbacks: true });
    const lost = await backend.submit(request());
    expect((await ended(lost.id)).status).toBe('succeeded');
    expect(fake.webhooks.sent).toBe(0);

    fake.set({ loseCallbacks: false, duplicateCallbacks: true });
    await backend.submit(request());
    const hooks = await inbox.waitFor((r) => r.length >= 4);
    const ids = hooks.map((h) => h.headers['webhook-id']);
    expect(new Set(ids).size).toBe(2);
    const read = await Promise.all(hooks.map((h) => backend.verifyCallback(h)));
    expect(read.filter((r) => r.type === 'job.succeeded').map((r) => r.eventId)).toHaveLength(2);
    expect(new Set(read.filter((r) => r.type === 'job.succeeded').map((r) => r.eventId)).size).toBe(1);
  });

  it('types HTTP failures: 422 rejected, 401/5xx/outage/slow unavailable, an unknown id lost', async () => {
    expect(await rejection(backend.submit(request('')))).toMatchObject({ name: 'BackendRejectedError', status: 422 });
    const wrongKey = new ReplicateBackend(spec({ credentials: 'r8_wrong' }), { callbackUrl: inbox.url, timeoutMs: 1_000 });
    expect(await rejection(wrongKey.submit(request()))).toMatchObject({ name: 'BackendUnavailableError', status: 401 });
    fake.set({ fail5xxNext: 1 });
    expect(await rejection(backend.submit(request()))).toMatchObject({ name: 'BackendUnavailableError', status: 503 });
    fake.set({ slowMs: 1_500 });
    expect(await rejection(backend.getJob('x'))).toBeInstanceOf(BackendUnavailableError);
    fake.set({ slowMs: 0, outage: true });
    expect(await rejection(backend.getJob('x'))).toBeInstanceOf(BackendUnavailableError);
    fake.set({ outage: false });
    expect(isJobNotFound(await rejection(backend.getJob('nosuchprediction')))).toBe(true);
  });

  it('a submit whose answer is lost: the retry finds the prediction by the key in its webhook and adopts it, so one prediction is live', async () => {
    const since = new Date(Date.now() - 1_000);
    const req = request('a fox, answer lost [fake:hang]');
    fake.set({ loseNextAnswers: 1 });
    expect(await rejection(backend.submit(req))).toBeInstanceOf(BackendUnavailableError);
    expect(fake.live()).toHaveLength(1);
    // Another attempt's prediction, created since, is not this one.
    await backend.submit(request('another attempt [fake:hang]'));

    const found = await backend.findSubmitted(req, since);
    expect(found).toMatchObject({ id: fake.live()[0].id, client_key: req.client_key });
    expect(fake.requests.filter((r) => r.method === 'GET' && r.path === '/v1/predictions')[0].query.get('created_after')).toBe(since.toISOString());
    expect(await backend.findSubmitted(request('never submitted'), since)).toBeNull();
    expect(fake.live()).toHaveLength(2);
    await backend.cancel(found!.id);
  });

  it('reads the list a page at a time (100 a page, newest first) to find an older prediction', async () => {
    const since = new Date(Date.now() - 1_000);
    const first = request('the oldest of many');
    fake.set({ runMs: 60_000 });
    await backend.submit(first);
    for (let i = 0; i < 120; i += 1) await backend.submit(request(`filler ${i}`));
    expect((await backend.findSubmitted(first, since))?.client_key).toBe(first.client_key);
    expect(fake.requests.filter((r) => r.path === '/v1/predictions' && r.method === 'GET')).toHaveLength(2);
  });

  it('checks its health with GET /v1/account: answered, or down in an outage or with a refused token', async () => {
    await expect(backend.health()).resolves.toBeUndefined();
    expect(fake.requests.at(-1)).toMatchObject({ method: 'GET', path: '/v1/account' });
    fake.set({ outage: true });
    expect(await rejection(backend.health())).toBeInstanceOf(BackendUnavailableError);
    fake.set({ outage: false });
    const wrongKey = new ReplicateBackend(spec({ credentials: 'r8_wrong' }), { callbackUrl: inbox.url, timeoutMs: 1_000 });
    expect(await rejection(wrongKey.health())).toBeInstanceOf(BackendUnavailableError);
  });

  it('refuses, without calling Replicate, what the backend is configured not to render', async () => {
    const err = await rejection(backend.submit(request('a fox', { resolution: '1080p' })));
    expect(err).toBeInstanceOf(BackendRejectedError);
    expect(err.message).toMatch(/cannot render resolution 1080p/);
    expect(fake.requests).toHaveLength(0);
  });

  it('passes a start image as `image` and a remixed video as `video`, where its renders allow them, and refuses them elsewhere', async () => {
    const inputs = { input_reference: 'https://images.example/first-frame.png', remix_of: { job_id: 'gen_1', video_url: 'https://videos.example/1.mp4' } };
    const refused = await rejection(backend.submit(request('a fox', { input_reference: inputs.input_reference })));
    expect(refused).toBeInstanceOf(BackendRejectedError);
    expect(refused.message).toMatch(/cannot render an image input/);
    expect((await rejection(backend.submit(request('a fox', { remix_of: inputs.remix_of })))).message).toMatch(/cannot render a remix/);
    expect(fake.requests).toHaveLength(0);

    const i2v = new ReplicateBackend(spec({ renders: { image_input: true, video_input: true } }), { callbackUrl: inbox.url, timeoutMs: 1_000 });
    await i2v.submit(request('a fox', inputs));
    const create = fake.requests.find((r) => r.method === 'POST');
    expect((create?.body as { input: Record<string, unknown> }).input).toMatchObject({ prompt: 'a fox', image: inputs.input_reference, video: inputs.remix_of.video_url });
  });
});
