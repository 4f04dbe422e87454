import type { BackendCallback, BackendJob } from '../src/backend/types';
import { createLogger } from '../src/lib/logger';
import { generateWebhookSecret } from '../src/lib/webhook-signature';
import { startSimulator, type RunningSimulator } from './app';
import { defaultSimulatorKnobs, type SimulatorKnobs } from './knobs';
import { pollUntil, startCallbackReceiver, type CallbackReceiver } from '../test/simulator-helpers';

// Jobs take ~10-30ms: median 1s and p99 3s, scaled by 0.01.
const fast: SimulatorKnobs = { ...defaultSimulatorKnobs, capacity: 4, p50Ms: 1_000, p99Ms: 3_000, timeScale: 0.01 };
const secret = generateWebhookSecret();

let sim: RunningSimulator;
let receiver: CallbackReceiver;
let keyCounter = 0;

beforeEach(async () => {
  sim = await startSimulator({ port: 0, knobs: fast, webhookSecret: secret, logger: createLogger('simulator-test', 'silent') });
  receiver = await startCallbackReceiver(secret);
});

afterEach(async () => {
  await sim.close();
  await receiver.close();
});

async function call(method: string, path: string, body?: unknown, signal?: AbortSignal) {
  const response = await fetch(sim.url + path, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
    signal,
  });
  return { status: response.status, body: (await response.json()) as any };
}

const submitBody = (prompt = 'a fox in the snow', extra: Record<string, unknown> = {}) => ({
  client_key: `test-${process.pid}-${++keyCounter}`,
  prompt,
  duration_seconds: 5,
  resolution: '720p',
  aspect_ratio: '16:9',
  seed: 7,
  callback_url: receiver.url,
  ...extra,
});

const setKnobs = async (patch: Partial<SimulatorKnobs>) => expect((await call('PUT', '/admin/config', patch)).status).toBe(200);
const getJob = async (id: string): Promise<BackendJob> => (await call('GET', `/v1/jobs/${id}`)).body;
const adminJobs = async (prefix: string): Promise<BackendJob[]> =>
  (await call('GET', `/admin/jobs?client_key_prefix=${encodeURIComponent(prefix)}`)).body.data;
const stats = async () => (await call('GET', '/admin/stats')).body;
const waitForStatus = (id: string, statuses: string[]) =>
  pollUntil(() => adminJobs('').then((jobs) => jobs.find((j) => j.id === id) as BackendJob), (j) => statuses.includes(j?.status), {
    what: `job ${id} to be ${statuses.join('/')}`,
  });
const eventsFor = (id: string) => receiver.received.filter((r) => r.body.job.id === id).map((r) => r.body);

describe('backend simulator API', () => {
  it('runs a job to a video, idempotent by client_key, with signed started/succeeded callbacks', async () => {
    const body = submitBody();
    const first = await call('POST', '/v1/jobs', body);
    expect(first.status).toBe(201);
    expect(first.body).toMatchObject({ client_key: body.client_key, status: expect.stringMatching(/queued|running/) });
    const again = await call('POST', '/v1/jobs', body);
    expect(again.status).toBe(200);
    expect(again.body.id).toBe(first.body.id);
    expect(await adminJobs(body.client_key)).toHaveLength(1);

    const id = first.body.id as string;
    await receiver.waitFor(() => eventsFor(id).length === 2);
    const [started, ended] = receiver.received.filter((r) => r.body.job.id === id);
    expect(started.verified && ended.verified).toBe(true);
    expect(started.headers['content-type']).toBe('application/json');
    expect(started.headers['webhook-id']).toBe(started.body.event_id);
    expect(started.body).toMatchObject({ type: 'job.started', sequence: 1, job: { status: 'running' } });
    expect(ended.body).toMatchObject({ type: 'job.succeeded', sequence: 2, job: { status: 'succeeded', progress: 1 } });
    expect(started.body.event_id).not.toBe(ended.body.event_id);
    expect(await getJob(id)).toMatchObject({ status: 'succeeded', video_url: `https://videos.sim.local/${id}.mp4`, error: null });
  });

  it('rejects bad input naming the field, and answers 404 for unknown jobs', async () => {
    const missing = await call('POST', '/v1/jobs', { ...submitBody(), prompt: undefined });
    expect(missing.status).toBe(400);
    expect(missing.body.error).toMatchObject({ code: 'invalid_request', message: expect.stringContaining('prompt') });
    const badDuration = await call('POST', '/v1/jobs', submitBody('x', { duration_seconds: -1 }));
    expect(badDuration.body.error.message).toContain('duration_seconds');
    expect((await call('POST', '/v1/jobs', '{not json')).status).toBe(400);
    expect((await call('GET', '/v1/jobs/nope')).body).toEqual({ error: { code: 'not_found', message: expect.any(String) } });
    expect((await call('POST', '/v1/jobs/nope/cancel')).status).toBe(404);
    expect((await stats()).submitted).toBe(0);
  });

  it('fails jobs deterministically on [fail:permanent] and [fail:transient]', async () => {
    const permanent = (await call('POST', '/v1/jobs', submitBody('x [fail:permanent]'))).body.id;
    const transient = (await call('POST', '/v1/jobs', submitBody('x [fail:transient]'))).body.id;
    const p = await waitForStatus(permanent, ['failed', 'succeeded']);
    const t = await waitForStatus(transient, ['failed', 'succeeded']);
    expect(p).toMatchObject({ status: 'failed', video_url: null, error: { retryable: false } });
    expect(['content_policy_violation', 'invalid_input']).toContain(p.error?.code);
    expect(t).toMatchObject({ status: 'failed', error: { retryable: true } });
    expect(['internal_error', 'gpu_unavailable']).toContain(t.error?.code);
    await receiver.waitFor(() => eventsFor(permanent).some((e) => e.type === 'job.failed'));
  });

  it('keeps a [hang] job running until cancelled; cancel is idempotent and frees the GPU', async () => {
    await setKnobs({ capacity: 1 });
    const hung = (await call('POST', '/v1/jobs', submitBody('x [hang]'))).body.id;
    const next = (await call('POST', '/v1/jobs', submitBody())).body.id;
    await waitForStatus(hung, ['running']);
    expect((await getJob(next)).status).toBe('queued');

    const canceled = await call('POST', `/v1/jobs/${hung}/cancel`);
    expect(canceled).toMatchObject({ status: 200, body: { status: 'canceled' } });
    const again = await call('POST', `/v1/jobs/${hung}/cancel`);
    expect(again).toEqual({ status: 200, body: canceled.body });
    expect((await waitForStatus(next, ['succeeded'])).status).toBe('succeeded');
    await receiver.waitFor(() => eventsFor(hung).some((e) => e.type === 'job.canceled' && e.sequence === 2));
  });

  it('never runs more than capacity, starts FIFO, and honours a lowered capacity', async () => {
    await setKnobs({ capacity: 3 });
    const hung: string[] = [];
    for (let i = 0; i < 4; i++) hung.push((await call('POST', '/v1/jobs', submitBody('x [hang]'))).body.id);
    expect(await stats()).toMatchObject({ running: 3, queued: 1 });
    await setKnobs({ capacity: 1 });
    await call('POST', `/v1/jobs/${hung[0]}/cancel`);
    expect(await stats()).toMatchObject({ running: 2, queued: 1 });
    await call('POST', `/v1/jobs/${hung[1]}/cancel`);
    expect((await getJob(hung[3])).status).toBe('queued');
    await call('POST', `/v1/jobs/${hung[2]}/cancel`);
    expect((await getJob(hung[3])).status).toBe('running');

    await setKnobs({ capacity: 2 });
    await call('POST', `/v1/jobs/${hung[3]}/cancel`);
    await call('POST', '/admin/reset-stats');
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) ids.push((await call('POST', '/v1/jobs', submitBody())).body.id);
    const done = await Promise.all(ids.map((id) => waitForStatus(id, ['succeeded'])));
    const starts = done.map((j) => Date.parse(j.started_at as string));
    expect(starts).toEqual([...starts].sort((a, b) => a - b));
    expect((await stats()).max_running_observed).toBeLessThanOrEqual(2);
  });

  it('answers 503 without doing anything at errorRate 1', async () => {
    await setKnobs({ errorRate: 1 });
    const body = submitBody();
    expect(await call('POST', '/v1/jobs', body)).toEqual({ status: 503, body: { error: { code: 'unavailable', message: expect.any(String) } } });
    expect(await adminJobs(body.client_key)).toEqual([]);
    expect((await call('GET', '/healthz')).status).toBe(200);
  });

  it('delays answers but does the work at once when responses are slow', async () => {
    await setKnobs({ slowResponseRate: 1, slowResponseMs: 300 });
    const body = submitBody('x [hang]');
    const startedAt = Date.now();
    const answer = call('POST', '/v1/jobs', body);
    await pollUntil(() => adminJobs(body.client_key), (jobs) => jobs.length === 1, { what: 'the job to exist before the answer' });
    expect((await answer).status).toBe(201);
    expect(Date.now() - startedAt).toBeGreaterThanOrEqual(290);
  });

  it('freezes everything during an outage, except admin routes', async () => {
    await setKnobs({ p50Ms: 100_000, p99Ms: 100_000 }); // 1s runs: progress moves every few ms unless frozen
    const id = (await call('POST', '/v1/jobs', submitBody())).body.id;
    await pollUntil(() => adminJobs(''), (jobs) => jobs[0].progress > 0, { what: 'progress' });
    await setKnobs({ outage: true });
    expect((await call('POST', '/v1/jobs', submitBody())).status).toBe(503);
    expect((await call('GET', `/v1/jobs/${id}`)).body.error.code).toBe('unavailable');
    const frozen = (await adminJobs(''))[0];
    // A running job's progress changes every few ms; frozen, it must not move at all.
    for (const deadline = Date.now() + 200; Date.now() < deadline; ) {
      expect((await adminJobs(''))[0]).toMatchObject({ status: 'running', progress: frozen.progress });
    }
    await setKnobs({ outage: false });
    expect((await waitForStatus(id, ['succeeded'])).status).toBe('succeeded');
  });
});

describe('callbacks', () => {
  const runOne = async (prompt = 'x') => {
    const id = (await call('POST', '/v1/jobs', submitBody(prompt))).body.id as string;
    await waitForStatus(id, ['succeeded', 'failed', 'canceled']);
    await sim.simulator.callbacks.idle();
    return id;
  };

  it('loses every event at callbackLossRate 1', async () => {
    await setKnobs({ callbackLossRate: 1 });
    await runOne();
    expect(receiver.received).toEqual([]);
    expect(await stats()).toMatchObject({ callbacks_dropped: 2, callbacks_sent: 0 });
  });

  it('sends every event twice with the same event_id at callbackDuplicateRate 1', async () => {
    await setKnobs({ callbackDuplicateRate: 1 });
    const id = await runOne();
    const events = eventsFor(id);
    expect(events.map((e) => e.type)).toEqual(['job.started', 'job.started', 'job.succeeded', 'job.succeeded']);
    expect(events[0].event_id).toBe(events[1].event_id);
    expect(events[2].event_id).toBe(events[3].event_id);
    expect(await stats()).toMatchObject({ callbacks_duplicated: 2, callbacks_sent: 4 });
  });

  it('sends the started event after the terminal one at callbackReorderRate 1', async () => {
    await setKnobs({ callbackReorderRate: 1 });
    const id = await runOne();
    expect(eventsFor(id).map((e: BackendCallback) => e.sequence)).toEqual([2, 1]);
  });

  it('delays events by up to callbackDelayMs', async () => {
    await setKnobs({ callbackDelayMs: 50 });
    const id = await runOne();
    expect(eventsFor(id).map((e) => e.type)).toEqual(['job.started', 'job.succeeded']);
  });

  it('retries a failing receiver until it accepts', async () => {
    receiver.failNext(3);
    const id = await runOne();
    expect(receiver.refused).toBe(3);
    expect(eventsFor(id).map((e) => e.type)).toEqual(['job.started', 'job.succeeded']);
    expect(receiver.received.every((r) => r.verified)).toBe(true);
  });
});

describe('synchronous generate', () => {
  const generateBody = (prompt: string) => {
    const { callback_url: _unused, ...body } = submitBody(prompt);
    return body;
  };

  it('answers with the terminal job, and concurrent calls with one key share one job', async () => {
    const body = generateBody('x');
    const [a, b] = await Promise.all([call('POST', '/v1/generate', body), call('POST', '/v1/generate', body)]);
    expect(a.body).toMatchObject({ status: 'succeeded', video_url: expect.any(String) });
    expect(b.body.id).toBe(a.body.id);
    expect(await adminJobs(body.client_key)).toHaveLength(1);
    const failed = await call('POST', '/v1/generate', generateBody('x [fail:transient]'));
    expect(failed).toMatchObject({ status: 200, body: { status: 'failed', error: { retryable: true } } });
  });

  it('keeps the job running when the client hangs up, and a re-call attaches to it', async () => {
    const body = generateBody('x [hang]');
    const hangUp = new AbortController();
    const abandoned = call('POST', '/v1/generate', body, hangUp.signal).then(
      () => 'answered',
      (err: Error) => err.name,
    );
    const [job] = await pollUntil(() => adminJobs(body.client_key), (jobs) => jobs[0]?.status === 'running');
    hangUp.abort();
    expect(await abandoned).toBe('AbortError');
    expect((await getJob(job.id)).status).toBe('running');

    const reattached = call('POST', '/v1/generate', body);
    await call('POST', `/v1/jobs/${job.id}/cancel`);
    expect((await reattached).body).toMatchObject({ id: job.id, status: 'canceled' });
    expect(await adminJobs(body.client_key)).toHaveLength(1);
  });
});

describe('admin', () => {
  it('reads, validates and updates knobs', async () => {
    expect((await call('GET', '/admin/config')).body).toEqual(fast);
    expect((await call('PUT', '/admin/config', { capacity: 0 })).status).toBe(400);
    expect((await call('PUT', '/admin/config', { capcity: 2 })).body.error.message).toContain('capcity');
    expect((await call('PUT', '/admin/config', { p99Ms: 10 })).status).toBe(400);
    const updated = await call('PUT', '/admin/config', { capacity: 2, outage: true });
    expect(updated.body).toEqual({ ...fast, capacity: 2, outage: true });
    expect((await call('GET', '/admin/stats')).status).toBe(200);
  });

  it('counts and resets stats', async () => {
    const id = (await call('POST', '/v1/jobs', submitBody())).body.id;
    await waitForStatus(id, ['succeeded']);
    await sim.simulator.callbacks.idle();
    expect(await stats()).toMatchObject({ submitted: 1, succeeded: 1, running: 0, queued: 0, max_running_observed: 1, callbacks_sent: 2 });
    const reset = await call('POST', '/admin/reset-stats');
    expect(reset.body).toMatchObject({ submitted: 0, succeeded: 0, callbacks_sent: 0, max_running_observed: 0 });
  });

  it('closes cleanly with hanging jobs, waiting generate calls and pending callbacks', async () => {
    await setKnobs({ callbackDelayMs: 60_000 });
    await call('POST', '/v1/jobs', submitBody('x [hang]'));
    const { callback_url: _unused, ...body } = submitBody('x [hang]');
    const waiting = call('POST', '/v1/generate', body).then(
      (r) => r.status,
      () => 'disconnected',
    );
    await pollUntil(() => stats(), (s) => s.running === 2);
    await sim.close();
    expect([503, 'disconnected']).toContain(await waiting);
  });
});

describe('backend simulator admin key', () => {
  it('with an admin key, only its holder changes the knobs or resets the stats; reading them stays open', async () => {
    const adminApiKey = `sim-admin-${'k'.repeat(30)}`;
    const guarded = await startSimulator({ port: 0, knobs: fast, webhookSecret: secret, adminApiKey, logger: createLogger('simulator-test', 'silent') });
    try {
      const send = (method: string, path: string, key?: string) =>
        fetch(guarded.url + path, { method, headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) }, body: method === 'GET' ? undefined : JSON.stringify({ outage: true }) });
      expect((await send('PUT', '/admin/config')).status).toBe(401);
      expect((await send('PUT', '/admin/config', 'not-the-key')).status).toBe(401);
      expect((await send('POST', '/admin/reset-stats')).status).toBe(401);
      expect(guarded.simulator.engine.knobs.outage).toBe(false);
      expect((await send('GET', '/admin/config')).status).toBe(200);
      expect((await send('GET', '/admin/stats')).status).toBe(200);
      expect((await send('PUT', '/admin/config', adminApiKey)).status).toBe(200);
      expect(guarded.simulator.engine.knobs.outage).toBe(true);
    } finally {
      await guarded.close();
    }
  });
});
