import type { ConfiguredBackend } from '../../src/config';
import { VeoBackend } from '../../src/backend/veo';
import { BackendRejectedError, BackendUnavailableError, isJobNotFound, type BackendSubmitRequest } from '../../src/backend/types';
import { pollUntil } from '../simulator-helpers';
import { startVeoFake, type VeoFake } from '../fakes/veo';

/** The Veo adapter (Gemini API long-running operations) over real HTTP against the Veo fake (test/fakes/veo.ts). */
let fake: VeoFake;
let backend: VeoBackend;
let counter = 0;

type Spec = Extract<ConfiguredBackend, { kind: 'veo' }>;
const spec = (patch: Partial<Spec> = {}): Spec => ({
  name: 'veo',
  kind: 'veo',
  base_url: fake.url,
  credentials_env: 'GEMINI_API_KEY',
  credentials: fake.apiKey,
  capacity: 2,
  cost_factor: 3,
  model: 'veo-3.0-generate-001',
  renders: { resolutions: ['720p', '1080p'], aspect_ratios: ['16:9', '9:16'], durations_seconds: [4, 6, 8], image_input: true, video_input: false },
  ...patch,
});

beforeEach(async () => {
  fake = await startVeoFake({ runMs: 200 });
  backend = new VeoBackend(spec(), { callbackUrl: 'http://unused.test/', timeoutMs: 1_000 });
});

afterEach(() => fake.close());

const request = (prompt = 'a red fox in snow', patch: Partial<BackendSubmitRequest> = {}): BackendSubmitRequest => ({
  client_key: `job-${++counter}:run:1:attempt:1`,
  prompt,
  duration_seconds: 8,
  resolution: '720p',
  aspect_ratio: '16:9',
  seed: 3,
  callback_url: 'wanted',
  ...patch,
});

const ended = (id: string) => pollUntil(() => backend.getJob(id), (j) => ['succeeded', 'failed', 'canceled'].includes(j.status), { timeoutMs: 5_000, what: 'the operation to end' });

async function rejection(promise: Promise<unknown>): Promise<any> {
  return promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
    },
    (err: unknown) => err,
  );
}

describe('Veo adapter', () => {
  it('starts a long-running operation with the request as instances and parameters, and polls it to its video', async () => {
    const job = await backend.submit(request());
    expect(job.id).toMatch(/^models\/veo-3\.0-generate-001\/operations\/[0-9a-f]+$/);
    expect(job.status).toBe('running');
    const start = fake.requests.find((r) => r.method === 'POST');
    expect(start?.path).toBe('/v1beta/models/veo-3.0-generate-001:predictLongRunning');
    expect(start?.headers['x-goog-api-key']).toBe(fake.apiKey);
    expect(start?.body).toEqual({ instances: [{ prompt: 'a red fox in snow' }], parameters: { aspectRatio: '16:9', resolution: '720p', durationSeconds: 8, seed: 3 } });
    const done = await ended(job.id);
    expect(done).toMatchObject({ status: 'succeeded', error: null });
    expect(done.video_url).toMatch(/\/v1beta\/files\/[0-9a-f]+:download\?alt=media$/);
  });

  it('maps endings to our codes: safety-filtered and invalid are final, exhausted and internal worth another attempt', async () => {
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

  it('has no cancel: cancel answers canceled without asking Veo, and the operation runs on there', async () => {
    const job = await backend.submit(request('a fox [fake:hang]'));
    const before = fake.requests.length;
    expect(backend.cancelStopsWork).toBe(false);
    expect((await backend.cancel(job.id)).status).toBe('canceled');
    expect(fake.requests).toHaveLength(before);
    expect(fake.live().map((op) => op.name)).toEqual([job.id]);
  });

  it('types HTTP failures: a refused parameter is rejected, a refused key, 5xx, outage and slow answers are unavailable', async () => {
    const noRender = new VeoBackend(spec({ renders: { image_input: false, video_input: false } }), { callbackUrl: 'http://unused.test/', timeoutMs: 1_000 });
    expect(await rejection(noRender.submit(request('a fox', { duration_seconds: 5 })))).toMatchObject({ name: 'BackendRejectedError', status: 400 });
    const wrongKey = new VeoBackend(spec({ credentials: 'AIzaWrong' }), { callbackUrl: 'http://unused.test/', timeoutMs: 1_000 });
    expect(await rejection(wrongKey.submit(request()))).toBeInstanceOf(BackendUnavailableError);
    fake.set({ fail5xxNext: 1 });
    expect(await rejection(backend.submit(request()))).toMatchObject({ name: 'BackendUnavailableError', status: 503 });
    fake.set({ slowMs: 1_500 });
    expect(await rejection(backend.getJob('models/veo-3.0-generate-001/operations/x'))).toBeInstanceOf(BackendUnavailableError);
    fake.set({ slowMs: 0, outage: true });
    expect(await rejection(backend.getJob('models/veo-3.0-generate-001/operations/x'))).toBeInstanceOf(BackendUnavailableError);
    fake.set({ outage: false });
    expect(isJobNotFound(await rejection(backend.getJob('models/veo-3.0-generate-001/operations/gone')))).toBe(true);
    expect(isJobNotFound(await rejection(backend.getJob('../../etc/passwd')))).toBe(true);
  });

  it('checks its health with GET /v1beta/models/{model}: answered; down in an outage, with a refused key, or for a model it does not serve', async () => {
    await expect(backend.health()).resolves.toBeUndefined();
    expect(fake.requests.at(-1)).toMatchObject({ method: 'GET', path: '/v1beta/models/veo-3.0-generate-001' });
    fake.set({ outage: true });
    expect(await rejection(backend.health())).toBeInstanceOf(BackendUnavailableError);
    fake.set({ outage: false });
    const wrongKey = new VeoBackend(spec({ credentials: 'AIzaWrong' }), { callbackUrl: 'http://unused.test/', timeoutMs: 1_000 });
    expect(await rejection(wrongKey.health())).toBeInstanceOf(BackendUnavailableError);
    const noModel = new VeoBackend(spec({ model: 'veo-9-imaginary' }), { callbackUrl: 'http://unused.test/', timeoutMs: 1_000 });
    expect(await rejection(noModel.health())).toMatchObject({ name: 'BackendRejectedError', status: 404 });
  });

  it('a submit whose answer is lost leaves a second operation: Veo has no key, no list and no cancel (docs/backends.md, Known limits)', async () => {
    const req = request('a fox, answer lost [fake:hang]');
    fake.set({ loseNextAnswers: 1 });
    expect(await rejection(backend.submit(req))).toBeInstanceOf(BackendUnavailableError);
    expect('findSubmitted' in backend).toBe(false);
    await backend.submit(req);
    expect(fake.live()).toHaveLength(2);
  });

  it('refuses, without calling Veo, a duration or aspect ratio it is configured not to render', async () => {
    expect(await rejection(backend.submit(request('a fox', { duration_seconds: 5 })))).toBeInstanceOf(BackendRejectedError);
    expect(await rejection(backend.submit(request('a fox', { aspect_ratio: '1:1' })))).toBeInstanceOf(BackendRejectedError);
    expect(fake.requests).toHaveLength(0);
  });

  it('refuses an image or a remix without calling Veo, even where its renders list images: the adapter sends none', async () => {
    const before = fake.requests.length;
    const image = await rejection(backend.submit(request('a fox', { input_reference: 'https://images.example/first-frame.png' })));
    expect(image).toMatchObject({ name: 'BackendRejectedError', status: 422, code: 'invalid_input' });
    expect(image.message).toMatch(/cannot render an image input/);
    expect((await rejection(backend.submit(request('a fox', { remix_of: { job_id: 'gen_1', video_url: 'https://videos.example/1.mp4' } })))).message).toMatch(/cannot render a remix/);
    expect(fake.requests).toHaveLength(before);
  });
});
