import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLogger } from '../lib/logger';
import { generateWebhookSecret } from '../lib/webhook-signature';
import { startSimulator, type RunningSimulator } from '../../simulator/app';
import { defaultSimulatorKnobs, type SimulatorKnobs } from '../../simulator/knobs';
import { pollUntil, startCallbackReceiver } from '../../test/simulator-helpers';
import { HttpGenerationBackend } from './http-backend';
import { sendHttp, type HttpSend } from './http-client';
import { BackendRejectedError, BackendUnavailableError, type BackendSubmitRequest } from './types';

const fast: SimulatorKnobs = { ...defaultSimulatorKnobs, capacity: 4, p50Ms: 1_000, p99Ms: 3_000, timeScale: 0.01 };

let sim: RunningSimulator;
let backend: HttpGenerationBackend;
let counter = 0;

beforeEach(async () => {
  sim = await startSimulator({ port: 0, knobs: fast, webhookSecret: generateWebhookSecret(), logger: createLogger('sim', 'silent') });
  backend = new HttpGenerationBackend({ baseUrl: `${sim.url}/`, timeoutMs: 2_000 });
});

afterEach(() => sim.close());

const request = (prompt = 'a lighthouse at dusk'): BackendSubmitRequest => ({
  client_key: `http-${++counter}`,
  prompt,
  duration_seconds: 4,
  resolution: '1080p',
  aspect_ratio: '9:16',
  seed: null,
});

const setKnobs = (patch: Partial<SimulatorKnobs>) => sim.simulator.engine.updateKnobs({ ...sim.simulator.engine.knobs, ...patch });

/** Resolves with what the promise rejected with; fails the test if it resolved. */
async function rejection(promise: Promise<unknown>): Promise<any> {
  return promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${JSON.stringify(value)}`);
    },
    (err: unknown) => err,
  );
}

/** A one-route server answering every request with the given status and body. */
async function fakeBackend(status: number, body: string): Promise<{ url: string; server: Server }> {
  const server = createServer((_req, res) => res.writeHead(status, { 'content-type': 'application/json' }).end(body));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe('HttpGenerationBackend', () => {
  it('submits idempotently, polls and cancels', async () => {
    const req = request('a lighthouse [hang]');
    const job = await backend.submit(req);
    expect(job).toMatchObject({ client_key: req.client_key, video_url: null, error: null });
    expect((await backend.submit(req)).id).toBe(job.id);
    await pollUntil(() => backend.getJob(job.id), (j) => j.status === 'running');
    expect(await backend.cancel(job.id)).toMatchObject({ id: job.id, status: 'canceled' });
    expect((await backend.cancel(job.id)).status).toBe('canceled');
  });

  it('maps 4xx to BackendRejectedError with status and code', async () => {
    const unknown = await rejection(backend.getJob('no-such-job'));
    expect(unknown).toBeInstanceOf(BackendRejectedError);
    expect(unknown).toMatchObject({ status: 404, code: 'not_found' });
    const invalid = await rejection(backend.submit({ ...request(), prompt: '' }));
    expect(invalid).toBeInstanceOf(BackendRejectedError);
    expect(invalid).toMatchObject({ status: 400, code: 'invalid_request', message: expect.stringContaining('prompt') });
  });

  it('maps injected 503s and outages to BackendUnavailableError', async () => {
    setKnobs({ errorRate: 1 });
    const injected = await rejection(backend.submit(request()));
    expect(injected).toBeInstanceOf(BackendUnavailableError);
    expect(injected.status).toBe(503);
    setKnobs({ errorRate: 0, outage: true });
    expect(await rejection(backend.getJob('anything'))).toBeInstanceOf(BackendUnavailableError);
    expect(await rejection(backend.generate(request()))).toBeInstanceOf(BackendUnavailableError);
  });

  it('times out slow answers as BackendUnavailableError, and a retry finds the same job', async () => {
    setKnobs({ slowResponseRate: 1, slowResponseMs: 1_000 });
    const impatient = new HttpGenerationBackend({ baseUrl: sim.url, timeoutMs: 100 });
    const req = request();
    const timedOut = await rejection(impatient.submit(req));
    expect(timedOut).toBeInstanceOf(BackendUnavailableError);
    expect(timedOut.message).toContain('timed out');
    setKnobs({ slowResponseRate: 0 });
    const retried = await impatient.submit(req);
    expect(sim.simulator.engine.list(req.client_key)).toEqual([expect.objectContaining({ id: retried.id })]);
  });

  it('maps a refused connection to BackendUnavailableError', async () => {
    const { url, server } = await fakeBackend(200, '{}');
    await new Promise((resolve) => server.close(resolve));
    const err = await rejection(new HttpGenerationBackend({ baseUrl: url, timeoutMs: 1_000 }).getJob('x'));
    expect(err).toBeInstanceOf(BackendUnavailableError);
    expect(err.status).toBeUndefined();
  });

  it('treats 429 and malformed success bodies as retryable', async () => {
    const busy = await fakeBackend(429, '{"error":{"code":"rate_limited"}}');
    const garbled = await fakeBackend(200, '{"id": 1}');
    try {
      expect(await rejection(new HttpGenerationBackend({ baseUrl: busy.url, timeoutMs: 1_000 }).getJob('x'))).toMatchObject({
        name: 'BackendUnavailableError',
        status: 429,
      });
      expect(await rejection(new HttpGenerationBackend({ baseUrl: garbled.url, timeoutMs: 1_000 }).getJob('x'))).toBeInstanceOf(
        BackendUnavailableError,
      );
    } finally {
      busy.server.close();
      garbled.server.close();
    }
  });

  describe('generate (synchronous mode)', () => {
    it('returns the terminal job, failed ones included, ignoring timeoutMs for the wait', async () => {
      const patient = new HttpGenerationBackend({ baseUrl: sim.url, timeoutMs: 1 });
      setKnobs({ p50Ms: 10_000, p99Ms: 10_000 }); // 100ms, far beyond the 1ms request timeout
      expect(await patient.generate(request())).toMatchObject({ status: 'succeeded', progress: 1, video_url: expect.any(String) });
      expect(await backend.generate(request('x [fail:permanent]'))).toMatchObject({ status: 'failed', error: { retryable: false } });
    });

    it('does not send callback_url, and is idempotent by client_key', async () => {
      const receiver = await startCallbackReceiver('whsec_dW51c2Vk');
      try {
        const req = { ...request(), callback_url: receiver.url };
        const [a, b] = await Promise.all([backend.generate(req), backend.generate(req)]);
        expect(b.id).toBe(a.id);
        await sim.simulator.callbacks.idle();
        expect(receiver.received).toEqual([]);
        expect(sim.simulator.stats()).toMatchObject({ callbacks_sent: 0, callbacks_dropped: 0 });
      } finally {
        await receiver.close();
      }
    });

    it("re-attaches by client_key when undici's own idle limit cuts a long wait", async () => {
      let calls = 0;
      const idleOnce: HttpSend = async (req) => {
        if (++calls === 1) throw Object.assign(new Error('Headers Timeout Error'), { code: 'UND_ERR_HEADERS_TIMEOUT' });
        return sendHttp(req);
      };
      const job = await new HttpGenerationBackend({ baseUrl: sim.url, timeoutMs: 0, send: idleOnce }).generate(request());
      expect(job.status).toBe('succeeded');
      expect(calls).toBe(2);
      const refusing: HttpSend = () => Promise.reject(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' }));
      const refused = new HttpGenerationBackend({ baseUrl: sim.url, timeoutMs: 0, send: refusing });
      expect(await rejection(refused.generate(request()))).toMatchObject({ name: 'BackendUnavailableError' });
    });

    it('rejects with the caller abort reason and leaves the job running', async () => {
      const req = request('x [hang]');
      const abort = new AbortController();
      const pending = rejection(backend.generate(req, abort.signal));
      const [job] = await pollUntil(
        () => sim.simulator.engine.list(req.client_key),
        (jobs) => jobs[0]?.status === 'running',
      );
      const reason = new Error('activity cancelled');
      abort.abort(reason);
      expect(await pending).toBe(reason);
      expect(sim.simulator.engine.get(job.id)?.status).toBe('running');
    });
  });

  it('hands the simulator a start image and a remixed video, which its job echoes; a backend configured without them refuses', async () => {
    const inputs = { input_reference: 'https://images.example/first-frame.png', remix_of: { job_id: 'gen_1', video_url: 'https://videos.sim.local/job_1.mp4' } };
    const job = await backend.submit({ ...request(), ...inputs });
    expect(sim.simulator.engine.get(job.id)?.inputs).toEqual(inputs);
    expect(sim.simulator.engine.get((await backend.submit(request())).id)).not.toHaveProperty('inputs');

    const textOnly = new HttpGenerationBackend({ baseUrl: sim.url, timeoutMs: 2_000, renders: { name: 'sim-t2v', renders: { image_input: false, video_input: false } } });
    const submitted = sim.simulator.engine.stats().submitted;
    const refused = await rejection(textOnly.submit({ ...request(), input_reference: inputs.input_reference }));
    expect(refused).toBeInstanceOf(BackendRejectedError);
    expect(refused).toMatchObject({ status: 422, code: 'invalid_input', message: 'backend sim-t2v cannot render an image input' });
    expect((await rejection(textOnly.generate({ ...request(), remix_of: inputs.remix_of }))).message).toBe('backend sim-t2v cannot render a remix (a video input)');
    expect(sim.simulator.engine.stats().submitted).toBe(submitted);
  });
});
