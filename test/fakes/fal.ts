import { createHash, generateKeyPairSync, randomUUID, sign, type KeyObject } from 'node:crypto';
import { FakeJobs, outcomeOf, startFakeServer, type FakeAnswer, type FakeKnobs, type FakeOutcome, type FakeRequest, type FakeServer } from './fake-server';

/**
 * A local fal queue, after its reference (docs/backends.md says which version): POST /{endpoint id}?fal_webhook=…
 * (`Authorization: Key …`) queues a request and answers its request_id and URLs; under /{owner}/{app}/requests/{id}:
 * GET …/status (IN_QUEUE, IN_PROGRESS, COMPLETED, with `error`/`error_type` when it failed), GET … (the result), PUT
 * …/cancel (202 CANCELLATION_REQUESTED, 400 ALREADY_COMPLETED). The webhook posts {request_id, gateway_request_id,
 * status OK|ERROR, payload, error}, signed with ED25519 over request id, user id, timestamp and the body's SHA-256
 * (X-Fal-Webhook-* headers); the public key is served as a JWKS at /.well-known/jwks.json.
 */
interface QueuedRequest {
  id: string;
  outcome: FakeOutcome;
  state: 'queued' | 'running' | 'ended';
  app: string;
  canceled: boolean;
  webhook?: string;
  input: Record<string, unknown>;
}

export interface FalFake extends FakeServer {
  key: string;
  jwksUrl: string;
  requestsById: Map<string, QueuedRequest>;
  live(): QueuedRequest[];
  /** Signs as fal would, with the fake's key (or another one, for forgeries). */
  signWebhook(requestId: string, body: string, key?: KeyObject): Record<string, string>;
}

const USER_ID = 'fake-fal-user';

const FAILURES: Record<Exclude<FakeOutcome, 'succeed' | 'hang'>, { status: number; error: string; type: string; detail: unknown }> = {
  content: { status: 422, error: 'Invalid status code: 422', type: 'content_policy_violation', detail: [{ loc: ['body', 'prompt'], msg: 'The prompt was flagged by the content checker', type: 'content_policy_violation' }] },
  input: { status: 422, error: 'Invalid status code: 422', type: 'validation_error', detail: [{ loc: ['body', 'duration'], msg: 'value is not a valid enumeration member', type: 'type_error.enum' }] },
  oom: { status: 503, error: 'Invalid status code: 503', type: 'runner_out_of_memory', detail: 'CUDA out of memory' },
  internal: { status: 500, error: 'Invalid status code: 500', type: 'internal_error', detail: 'Internal server error' },
};

export async function startFalFake(knobs: Partial<FakeKnobs> = {}): Promise<FalFake> {
  const key = `${randomUUID()}:${randomUUID().replace(/-/g, '')}`;
  const { publicKey, privateKey } = generateKeyPairSync('ed25519');
  const jwk = publicKey.export({ format: 'jwk' });
  const queued = new Map<string, QueuedRequest>();

  function signed(requestId: string, body: string, with_: KeyObject = privateKey): Record<string, string> {
    const timestamp = String(Math.floor(Date.now() / 1000));
    const message = [requestId, USER_ID, timestamp, createHash('sha256').update(body).digest('hex')].join('\n');
    return {
      'x-fal-webhook-request-id': requestId,
      'x-fal-webhook-user-id': USER_ID,
      'x-fal-webhook-timestamp': timestamp,
      'x-fal-webhook-signature': sign(null, Buffer.from(message), with_).toString('hex'),
    };
  }

  const result = (r: QueuedRequest) => ({ video: { url: `${fake.url}/files/${r.id}/video.mp4`, content_type: 'video/mp4', file_name: 'video.mp4', file_size: 1_824_075 }, seed: 42 });

  function notify(r: QueuedRequest): void {
    if (!r.webhook) return;
    const failure = r.outcome === 'succeed' || r.outcome === 'hang' ? null : FAILURES[r.outcome];
    const body = JSON.stringify(
      failure
        ? { request_id: r.id, gateway_request_id: r.id, status: 'ERROR', error: failure.error, payload: { detail: failure.detail } }
        : { request_id: r.id, gateway_request_id: r.id, status: 'OK', payload: result(r) },
    );
    fake.deliver(r.webhook, () => signed(r.id, body), body);
  }

  function submit(req: FakeRequest, endpoint: string): FakeAnswer {
    const input = (req.body ?? {}) as Record<string, unknown>;
    if (typeof input.prompt !== 'string' || input.prompt === '') {
      return { status: 422, body: { detail: [{ loc: ['body', 'prompt'], msg: 'field required', type: 'value_error.missing' }] } };
    }
    const app = endpoint.split('/').slice(0, 2).join('/');
    const r: QueuedRequest = { id: randomUUID(), outcome: outcomeOf(input.prompt), state: 'queued', app, canceled: false, webhook: req.query.get('fal_webhook') ?? undefined, input };
    queued.set(r.id, r);
    jobs.add(r);
    const base = `${fake.url}/${app}/requests/${r.id}`;
    return { status: 200, body: { request_id: r.id, gateway_request_id: r.id, response_url: base, status_url: `${base}/status`, cancel_url: `${base}/cancel`, queue_position: jobs.live().length - 1 } };
  }

  function status(r: QueuedRequest): FakeAnswer {
    const base = `${fake.url}/${r.app}/requests/${r.id}`;
    if (r.state === 'queued') return { status: 202, body: { status: 'IN_QUEUE', queue_position: 0, response_url: base } };
    if (r.state === 'running') return { status: 202, body: { status: 'IN_PROGRESS', response_url: base, logs: null } };
    if (r.canceled) return { status: 200, body: { status: 'COMPLETED', response_url: base, error: 'Request was cancelled', error_type: 'request_cancelled' } };
    const failure = r.outcome === 'succeed' ? null : FAILURES[r.outcome as keyof typeof FAILURES];
    return { status: 200, body: { status: 'COMPLETED', response_url: base, metrics: { inference_time: 1.2 }, ...(failure ? { error: failure.error, error_type: failure.type } : {}) } };
  }

  function response(r: QueuedRequest): FakeAnswer {
    if (r.state !== 'ended') return { status: 400, body: { detail: 'Request is still in progress' } };
    if (r.canceled) return { status: 400, body: { detail: 'Request was cancelled' } };
    const failure = r.outcome === 'succeed' ? null : FAILURES[r.outcome as keyof typeof FAILURES];
    return failure ? { status: failure.status, body: { detail: failure.detail } } : { status: 200, body: result(r) };
  }

  const fake: FakeServer = await startFakeServer((req) => {
    if (req.method === 'GET' && req.path === '/.well-known/jwks.json') return { status: 200, body: { keys: [{ ...jwk, kid: 'fake-1', use: 'sig', alg: 'EdDSA' }] } };
    if (req.headers.authorization !== `Key ${key}`) return { status: 401, body: { detail: 'No user found for Key ID and Secret' } };
    const one = /^\/([\w.-]+\/[\w.-]+)\/requests\/([\w-]+)(\/status|\/cancel)?$/.exec(req.path);
    if (one) {
      const r = queued.get(one[2]);
      if (!r || r.app !== one[1]) return { status: 404, body: { detail: 'Request not found' } };
      if (req.method === 'GET' && one[3] === '/status') return status(r);
      if (req.method === 'GET' && !one[3]) return response(r);
      if (req.method === 'PUT' && one[3] === '/cancel') {
        if (r.state === 'ended') return { status: 400, body: { status: 'ALREADY_COMPLETED' } };
        r.state = 'ended';
        r.canceled = true;
        return { status: 202, body: { status: 'CANCELLATION_REQUESTED' } };
      }
      return undefined;
    }
    if (req.method === 'POST' && /^\/[\w.-]+\/[\w.-]+(\/[\w.-]+)*$/.test(req.path)) return submit(req, req.path.slice(1));
    return undefined;
  }, knobs);
  const jobs = new FakeJobs<QueuedRequest>(fake.knobs, { start: () => undefined, end: notify });

  const close = fake.close.bind(fake);
  return Object.assign(fake, {
    key,
    jwksUrl: `${fake.url}/.well-known/jwks.json`,
    requestsById: queued,
    live: () => jobs.live(),
    signWebhook: signed,
    async close() {
      jobs.stop();
      await close();
    },
  });
}
