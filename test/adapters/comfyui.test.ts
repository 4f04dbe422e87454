import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { ConfiguredBackend } from '../../src/config';
import { ComfyUiBackend, promptIdOf } from '../../src/backend/comfyui';
import { BackendUnavailableError, isJobNotFound, type BackendSubmitRequest } from '../../src/backend/types';
import { pollUntil } from '../simulator-helpers';
import { startComfyUiFake, type ComfyUiFake } from '../fakes/comfyui';

/** The ComfyUI adapter over real HTTP against the ComfyUI fake (test/fakes/comfyui.ts). */
export const WORKFLOW = path.join(__dirname, '../fixtures/comfyui/wan-t2v.json');

let fake: ComfyUiFake;
let backend: ComfyUiBackend;
let counter = 0;

type Spec = Extract<ConfiguredBackend, { kind: 'comfyui' }>;
const spec = (patch: Partial<Spec> = {}): Spec => ({
  name: 'comfy',
  kind: 'comfyui',
  base_url: fake.url,
  capacity: 1,
  cost_factor: 0.5,
  workflow_path: WORKFLOW,
  fps: 16,
  renders: { resolutions: ['480p', '720p'], image_input: false, video_input: false },
  ...patch,
});

beforeEach(async () => {
  fake = await startComfyUiFake({ runMs: 200 });
  backend = new ComfyUiBackend(spec(), { callbackUrl: 'http://unused.test/', timeoutMs: 1_000 });
});

afterEach(() => fake.close());

const request = (prompt = 'a red fox in snow', patch: Partial<BackendSubmitRequest> = {}): BackendSubmitRequest => ({
  client_key: `job-${++counter}:run:1:attempt:1`,
  prompt,
  duration_seconds: 5,
  resolution: '480p',
  aspect_ratio: '16:9',
  seed: 11,
  ...patch,
});

const ended = (id: string) => pollUntil(() => backend.getJob(id), (j) => ['succeeded', 'failed', 'canceled'].includes(j.status), { timeoutMs: 5_000, what: 'the prompt to end' });

async function rejection(promise: Promise<unknown>): Promise<any> {
  return promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
    },
    (err: unknown) => err,
  );
}

describe('ComfyUI adapter', () => {
  it('queues the workflow with its placeholders filled in, under a prompt id of the attempt, and polls history to the video', async () => {
    const req = request();
    const job = await backend.submit(req);
    expect(job).toMatchObject({ id: promptIdOf(req.client_key), status: 'queued' });
    const graph = fake.prompts.get(job.id)!.graph as Record<string, { inputs: Record<string, unknown> }>;
    expect(graph['4'].inputs.text).toBe(req.prompt);
    expect(graph['6'].inputs).toMatchObject({ width: 848, height: 480, length: 81 });
    expect(graph['7'].inputs.seed).toBe(11);
    expect(graph['9'].inputs.frame_rate).toBe(16);
    const done = await ended(job.id);
    expect(done.status).toBe('succeeded');
    expect(done.video_url).toMatch(new RegExp(`^${fake.url}/view\\?filename=videogen_\\d+\\.mp4&subfolder=&type=output$`));
  });

  it('a retried submit of the same attempt finds its prompt instead of queueing a second', async () => {
    const req = request();
    const first = await backend.submit(req);
    const again = await backend.submit(req);
    expect(again.id).toBe(first.id);
    expect(fake.requests.filter((r) => r.method === 'POST' && r.path === '/prompt')).toHaveLength(1);
  });

  it('maps failures: out of memory is worth another attempt, a graph ComfyUI refuses is the input', async () => {
    expect(await ended((await backend.submit(request('a fox [fake:fail=oom]'))).id)).toMatchObject({ status: 'failed', error: { code: 'gpu_unavailable', retryable: true } });
    expect(await ended((await backend.submit(request('a fox [fake:fail=internal]'))).id)).toMatchObject({ status: 'failed', error: { code: 'internal_error', retryable: true } });
    const broken = new ComfyUiBackend(spec({ workflow_path: path.join(__dirname, '../fixtures/comfyui/empty.json') }), { callbackUrl: 'http://unused.test/', timeoutMs: 1_000 });
    expect(await rejection(broken.submit(request()))).toMatchObject({ name: 'BackendRejectedError', status: 400 });
  });

  it('cancels: a running prompt is interrupted, a waiting one leaves the queue', async () => {
    const running = await backend.submit(request('a fox [fake:hang]'));
    await pollUntil(() => backend.getJob(running.id), (j) => j.status === 'running', { what: 'running' });
    expect((await backend.cancel(running.id)).status).toBe('canceled');
    expect(fake.requests.some((r) => r.path === '/interrupt' && (r.body as { prompt_id: string }).prompt_id === running.id)).toBe(true);
    expect((await backend.getJob(running.id)).status).toBe('canceled');

    fake.set({ queueMs: 5_000 });
    const waiting = await backend.submit(request('a fox'));
    expect((await backend.getJob(waiting.id)).status).toBe('queued');
    expect((await backend.cancel(waiting.id)).status).toBe('canceled');
    expect(fake.requests.some((r) => r.path === '/queue' && r.method === 'POST')).toBe(true);
    expect(fake.live()).toHaveLength(0);
  });

  it('checks its health with GET /system_stats: answered, or down in an outage', async () => {
    await expect(backend.health()).resolves.toBeUndefined();
    expect(fake.requests.at(-1)).toMatchObject({ method: 'GET', path: '/system_stats' });
    fake.set({ outage: true });
    expect(await rejection(backend.health())).toBeInstanceOf(BackendUnavailableError);
  });

  it("a submit whose answer is lost: the retry finds the prompt under the attempt's prompt_id, one prompt live", async () => {
    const req = request('a fox, answer lost [fake:hang]');
    fake.set({ loseNextAnswers: 1 });
    expect(await rejection(backend.submit(req))).toBeInstanceOf(BackendUnavailableError);
    const again = await backend.submit(req);
    expect(again.id).toBe(promptIdOf(req.client_key));
    expect(fake.live()).toHaveLength(1);
  });

  it('types HTTP failures: 5xx, outage and slow answers are unavailable; a prompt it does not know is lost', async () => {
    fake.set({ fail5xxNext: 1 });
    expect(await rejection(backend.getJob('x'))).toMatchObject({ name: 'BackendUnavailableError', status: 503 });
    fake.set({ slowMs: 1_500 });
    expect(await rejection(backend.getJob('x'))).toBeInstanceOf(BackendUnavailableError);
    fake.set({ slowMs: 0, outage: true });
    expect(await rejection(backend.submit(request()))).toBeInstanceOf(BackendUnavailableError);
    fake.set({ outage: false });
    expect(isJobNotFound(await rejection(backend.getJob('00000000-0000-0000-0000-000000000000')))).toBe(true);
  });

  it('fills {{image_url}} and {{video_url}} with the start image and the remixed video, where its renders allow them', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'comfy-i2v-'));
    const workflow = JSON.parse(readFileSync(WORKFLOW, 'utf8')) as Record<string, unknown>;
    workflow['90'] = { class_type: 'LoadImageFromUrl', inputs: { url: '{{image_url}}' } };
    workflow['91'] = { class_type: 'LoadVideoFromUrl', inputs: { url: '{{video_url}}' } };
    writeFileSync(path.join(dir, 'i2v.json'), JSON.stringify(workflow));
    const i2v = new ComfyUiBackend(spec({ workflow_path: path.join(dir, 'i2v.json'), renders: { image_input: true, video_input: true } }), { callbackUrl: 'http://unused.test/', timeoutMs: 1_000 });
    rmSync(dir, { recursive: true });
    const inputs = { input_reference: 'https://images.example/first-frame.png', remix_of: { job_id: 'gen_1', video_url: 'https://videos.example/1.mp4' } };
    const job = await i2v.submit(request('a fox', inputs));
    const graph = fake.prompts.get(job.id)!.graph as Record<string, { inputs: Record<string, unknown> }>;
    expect([graph['90'].inputs.url, graph['91'].inputs.url]).toEqual([inputs.input_reference, inputs.remix_of.video_url]);
    // The configured renders refuse both before a call.
    const before = fake.requests.length;
    expect((await rejection(backend.submit(request('a fox', { input_reference: inputs.input_reference })))).message).toMatch(/cannot render an image input/);
    expect(fake.requests).toHaveLength(before);
  });
});
