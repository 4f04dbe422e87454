import { signWebhook } from '../src/lib/webhook-signature';
import path from 'node:path';
import { startComfyUiFake, type ComfyUiFake } from './fakes/comfyui';
import { startFalFake, type FalFake } from './fakes/fal';
import { startReplicateFake, type ReplicateFake } from './fakes/replicate';
import { startVeoFake, type VeoFake } from './fakes/veo';
import { apiClient, eventually, settled, startStack, type Stack } from './harness';

/**
 * Each provider adapter end to end: the real service (API, workers, real Temporal and Postgres) with BACKENDS naming
 * that provider, pointed at its fake. A job submitted through the API succeeds, one fails with the mapped error, and a
 * cancel does what the provider allows.
 */
const stackEnv = (backend: Record<string, unknown>, secrets: Record<string, string>) => ({
  BACKENDS: JSON.stringify([backend]),
  ...secrets,
  MAX_ATTEMPTS: '2',
  EXPECTED_RUN_MS: '2000',
  MAX_RUN_MS: '20000',
});

async function waitRunning(api: ReturnType<typeof apiClient>, jobId: string) {
  return eventually(async () => {
    const job = (await api.get(jobId)).body;
    return job?.status === 'running' ? job : undefined;
  }, { timeoutMs: 20_000, what: `job ${jobId} to run` });
}

describe('Replicate, end to end (webhooks, polling only as the fallback)', () => {
  let fake: ReplicateFake;
  let stack: Stack;
  beforeAll(async () => {
    fake = await startReplicateFake({ runMs: 400 });
    // Polls a minute apart: a job that ends within seconds ended by its webhook.
    stack = await startStack({
      env: {
        ...stackEnv({ name: 'replicate', kind: 'replicate', base_url: fake.url, credentials_env: 'REPLICATE_API_TOKEN', capacity: 4, model: 'wan-video/wan-2.2-t2v-fast' }, { REPLICATE_API_TOKEN: fake.token }),
        POLL_INTERVAL_MS: '60000',
        // A lost answer is given up on within a second (the retry follows a second later).
        BACKEND_TIMEOUT_MS: '1000',
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
    await fake?.close();
  });

  test('a job succeeds through the signed webhook, with the prediction as its backend job', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobId = (await api.submit({ prompt: 'a red fox running through snow' })).body.id;
    const done = await api.waitForTerminal(jobId, 15_000);
    expect(done).toMatchObject({ status: 'succeeded', attempt: 1 });
    const [prediction] = [...fake.predictions.values()].filter((p) => p.input.prompt === 'a red fox running through snow');
    expect(done.backend_job_id).toBe(prediction.id);
    expect(done.video_url).toBe(`${fake.url}/files/${prediction.id}/output.mp4`);
    expect(new URL(prediction.webhook!).pathname).toBe('/internal/backend/callbacks/replicate');
    expect(fake.webhooks.delivered).toBeGreaterThanOrEqual(2);
  });

  test('webhooks sent twice change nothing: charged once, notified once', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    fake.set({ duplicateCallbacks: true });
    try {
      const jobId = (await api.submit({ prompt: 'a fox, told twice' })).body.id;
      expect((await api.waitForTerminal(jobId, 15_000)).status).toBe('succeeded');
      const { sql } = stack.database;
      const counts = async () => {
        const [row] = await sql`
          select (select count(*) from credit_ledger where job_id = ${jobId} and kind = 'capture')::int as captures,
                 (select count(*) from notifications where job_id = ${jobId})::int as notifications`;
        return row as { captures: number; notifications: number };
      };
      await eventually(async () => ((await counts()).notifications > 0 ? true : undefined));
      expect(await settled(counts)).toEqual({ captures: 1, notifications: 1 });
    } finally {
      fake.set({ duplicateCallbacks: false });
    }
  });

  test('a safety-filtered prediction fails the job at once with content_policy_violation, not retried', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobId = (await api.submit({ prompt: 'something the filter stops [fake:fail=content]' })).body.id;
    const done = await api.waitForTerminal(jobId, 15_000);
    expect(done).toMatchObject({ status: 'failed', attempt: 1, error: { code: 'content_policy_violation', retryable: false } });
  });

  test('a cancel cancels the prediction on Replicate', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobId = (await api.submit({ prompt: 'a very long take [fake:hang]' })).body.id;
    const running = await waitRunning(api, jobId);
    const answer = await api.call('POST', `/v1/generations/${jobId}/cancel`);
    expect([200, 202]).toContain(answer.status);
    expect(answer.headers.get('backend-cancel')).toBeNull();
    expect((await api.waitForTerminal(jobId, 15_000)).status).toBe('canceled');
    await eventually(async () => (fake.predictions.get(running.backend_job_id)?.status === 'canceled' ? true : undefined), { timeoutMs: 10_000, what: 'the prediction canceled' });
  });

  const livePredictions = (prompt: string) => [...fake.predictions.values()].filter((p) => p.input.prompt === prompt && (p.status === 'starting' || p.status === 'processing'));

  test('a submit whose answer is lost: the retried submit adopts the prediction it created, one live prediction for the attempt', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const prompt = 'a fox whose submit went unanswered [fake:hang]';
    fake.set({ loseNextAnswers: 1 });
    const jobId = (await api.submit({ prompt })).body.id;
    const running = await waitRunning(api, jobId);
    expect(await settled(async () => livePredictions(prompt).map((p) => p.id))).toEqual([running.backend_job_id]);
    expect([...fake.predictions.values()].filter((p) => p.input.prompt === prompt)).toHaveLength(1);
    expect(running.attempt).toBe(1);
    await api.call('POST', `/v1/generations/${jobId}/cancel`);
    expect((await api.waitForTerminal(jobId, 15_000)).status).toBe('canceled');
    expect(livePredictions(prompt)).toHaveLength(0);
  });

  test('a prediction its attempt does not follow calls back: acknowledged, not taken as the job, and canceled', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const prompt = 'a fox with a straggler [fake:hang]';
    const jobId = (await api.submit({ prompt })).body.id;
    const running = await waitRunning(api, jobId);
    const followed = fake.predictions.get(running.backend_job_id)!;
    // What an unanswered submit of the same attempt would have left there: the same input and the attempt's webhook.
    const straggler = await fetch(`${fake.url}/v1/models/wan-video/wan-2.2-t2v-fast/predictions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${fake.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ input: followed.input, webhook: followed.webhook, webhook_events_filter: ['start', 'completed'] }),
    });
    const orphanId = ((await straggler.json()) as { id: string }).id;
    await eventually(async () => (fake.predictions.get(orphanId)?.status === 'canceled' ? true : undefined), { timeoutMs: 15_000, what: 'the straggler canceled' });
    expect(livePredictions(prompt).map((p) => p.id)).toEqual([followed.id]);
    expect((await api.get(jobId)).body).toMatchObject({ status: 'running', backend_job_id: followed.id });
    await api.call('POST', `/v1/generations/${jobId}/cancel`);
    expect((await api.waitForTerminal(jobId, 15_000)).status).toBe('canceled');
    await eventually(async () => ((await stack.database.sql`select 1 from backend_cancels where backend_job_id = ${orphanId}`).length === 0 ? true : undefined), { what: 'the owed cancel done' });
  });

  test('a webhook signed with another secret is refused 401 and changes nothing', async () => {
    const body = JSON.stringify({ id: 'forged', status: 'succeeded', output: 'https://evil.test/x.mp4' });
    const res = await fetch(`${stack.apiUrl}/internal/backend/callbacks/replicate?client_key=x:run:1:attempt:1`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...signWebhook(`whsec_${Buffer.alloc(24, 7).toString('base64')}`, 'msg_forged', body) },
      body,
    });
    expect(res.status).toBe(401);
    expect((await fetch(`${stack.apiUrl}/internal/backend/callbacks/nosuchbackend`, { method: 'POST', body })).status).toBe(404);
  });
});

describe('Veo, end to end (polling a long-running operation; no cancel)', () => {
  let fake: VeoFake;
  let stack: Stack;
  beforeAll(async () => {
    fake = await startVeoFake({ runMs: 400 });
    const veo = {
      name: 'veo',
      kind: 'veo',
      base_url: fake.url,
      credentials_env: 'GEMINI_API_KEY',
      capacity: 4,
      model: 'veo-3.0-generate-001',
      renders: { aspect_ratios: ['16:9', '9:16'], durations_seconds: [4, 6, 8] },
    };
    stack = await startStack({ env: stackEnv(veo, { GEMINI_API_KEY: fake.apiKey }) });
  });
  afterAll(async () => {
    await stack?.close();
    await fake?.close();
  });

  test('a job succeeds by polling its operation', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobId = (await api.submit({ prompt: 'a lighthouse at dusk', duration_seconds: 8 })).body.id;
    const done = await api.waitForTerminal(jobId, 15_000);
    expect(done).toMatchObject({ status: 'succeeded', attempt: 1 });
    expect(done.backend_job_id).toMatch(/^models\/veo-3\.0-generate-001\/operations\//);
    expect(done.video_url).toMatch(/:download\?alt=media$/);
  });

  test('an exhausted operation is retried as a new attempt, then fails with gpu_unavailable; a render it cannot do fails invalid_input', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const exhausted = (await api.submit({ prompt: 'too many at once [fake:fail=oom]', duration_seconds: 4 })).body.id;
    expect(await api.waitForTerminal(exhausted, 20_000)).toMatchObject({ status: 'failed', attempt: 2, error: { code: 'gpu_unavailable', retryable: true } });
    const square = (await api.submit({ prompt: 'a square video', duration_seconds: 4, aspect_ratio: '1:1' })).body.id;
    expect(await api.waitForTerminal(square, 15_000)).toMatchObject({ status: 'failed', attempt: 1, error: { code: 'invalid_input', retryable: false } });
  });

  test('a cancel ends the job and says the backend could not stop it; the operation runs on there, unfollowed', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobId = (await api.submit({ prompt: 'a very long take [fake:hang]', duration_seconds: 6 })).body.id;
    const running = await waitRunning(api, jobId);
    const answer = await api.call('POST', `/v1/generations/${jobId}/cancel`);
    expect([200, 202]).toContain(answer.status);
    expect(answer.headers.get('backend-cancel')).toBe('unsupported');
    expect((await api.waitForTerminal(jobId, 15_000)).status).toBe('canceled');
    expect(fake.live().map((op) => op.name)).toContain(running.backend_job_id);
    // No longer polled: the count of reads of that operation stops growing.
    const reads = () => fake.requests.filter((r) => r.path === `/v1beta/${running.backend_job_id}`).length;
    const after = reads();
    // Three poll intervals: a poll still going on would show.
    expect(await settled(async () => reads(), 1_500)).toBe(after);
  });
});

describe('fal, end to end (signed webhooks, polling only as the fallback)', () => {
  let fake: FalFake;
  let stack: Stack;
  beforeAll(async () => {
    fake = await startFalFake({ runMs: 400 });
    const fal = { name: 'fal', kind: 'fal', base_url: fake.url, credentials_env: 'FAL_KEY', capacity: 4, model: 'fal-ai/wan/v2.2-a14b/text-to-video', jwks_url: fake.jwksUrl };
    stack = await startStack({ env: { ...stackEnv(fal, { FAL_KEY: fake.key }), POLL_INTERVAL_MS: '60000' } });
  });
  afterAll(async () => {
    await stack?.close();
    await fake?.close();
  });

  test('a job succeeds through the ED25519-signed webhook', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobId = (await api.submit({ prompt: 'a heron taking off' })).body.id;
    const done = await api.waitForTerminal(jobId, 15_000);
    expect(done).toMatchObject({ status: 'succeeded', attempt: 1 });
    expect(done.video_url).toBe(`${fake.url}/files/${done.backend_job_id}/video.mp4`);
    expect(fake.webhooks.delivered).toBeGreaterThanOrEqual(1);
  });

  test('a request the model refuses fails the job with invalid_input, not retried', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobId = (await api.submit({ prompt: 'a heron [fake:fail=input]' })).body.id;
    expect(await api.waitForTerminal(jobId, 15_000)).toMatchObject({ status: 'failed', attempt: 1, error: { code: 'invalid_input', retryable: false } });
  });

  test('a cancel cancels the request in fal\u2019s queue', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobId = (await api.submit({ prompt: 'a very long take [fake:hang]' })).body.id;
    const running = await waitRunning(api, jobId);
    expect((await api.call('POST', `/v1/generations/${jobId}/cancel`)).headers.get('backend-cancel')).toBeNull();
    expect((await api.waitForTerminal(jobId, 15_000)).status).toBe('canceled');
    await eventually(async () => (fake.requestsById.get(running.backend_job_id)?.canceled ? true : undefined), { timeoutMs: 10_000, what: 'the fal request canceled' });
  });
});

describe('ComfyUI, end to end (polling its history)', () => {
  let fake: ComfyUiFake;
  let stack: Stack;
  beforeAll(async () => {
    fake = await startComfyUiFake({ runMs: 400 });
    const comfy = { name: 'comfy', kind: 'comfyui', base_url: fake.url, capacity: 2, workflow_path: path.join(__dirname, 'fixtures/comfyui/wan-t2v.json') };
    stack = await startStack({ env: stackEnv(comfy, {}) });
  });
  afterAll(async () => {
    await stack?.close();
    await fake?.close();
  });

  test('a job succeeds with the workflow\u2019s video', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobId = (await api.submit({ prompt: 'a paper boat on a river', resolution: '480p' })).body.id;
    const done = await api.waitForTerminal(jobId, 15_000);
    expect(done).toMatchObject({ status: 'succeeded', attempt: 1 });
    expect(done.video_url).toMatch(new RegExp(`^${fake.url}/view\\?filename=`));
    const graph = fake.prompts.get(done.backend_job_id)!.graph as Record<string, { inputs: Record<string, unknown> }>;
    expect(graph['4'].inputs.text).toBe('a paper boat on a river');
  });

  test('a GPU out of memory is retried as a new attempt, then fails with gpu_unavailable', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobId = (await api.submit({ prompt: 'too large [fake:fail=oom]' })).body.id;
    expect(await api.waitForTerminal(jobId, 20_000)).toMatchObject({ status: 'failed', attempt: 2, error: { code: 'gpu_unavailable', retryable: true } });
  });

  test('a cancel interrupts the running prompt', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const jobId = (await api.submit({ prompt: 'a very long take [fake:hang]' })).body.id;
    const running = await waitRunning(api, jobId);
    await api.call('POST', `/v1/generations/${jobId}/cancel`);
    expect((await api.waitForTerminal(jobId, 15_000)).status).toBe('canceled');
    await eventually(async () => (fake.prompts.get(running.backend_job_id)?.state === 'ended' ? true : undefined), { timeoutMs: 10_000, what: 'the prompt interrupted' });
    expect(fake.requests.some((r) => r.path === '/interrupt')).toBe(true);
  });
});
