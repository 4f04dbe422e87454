import { randomBytes } from 'node:crypto';
import { signWebhook } from '../../src/lib/webhook-signature';
import { FakeJobs, outcomeOf, startFakeServer, type FakeAnswer, type FakeKnobs, type FakeOutcome, type FakeRequest, type FakeServer } from './fake-server';

/**
 * A local Replicate, after its HTTP API reference (docs/backends.md says which version): predictions created by model
 * (POST /v1/models/{owner}/{name}/predictions) or by version (POST /v1/predictions), read (GET /v1/predictions/{id}) and
 * canceled (POST /v1/predictions/{id}/cancel); statuses starting → processing → succeeded | failed | canceled; webhooks
 * for the `start` and `completed` events of `webhook_events_filter`, signed the Standard Webhooks way with the account's
 * secret (GET /v1/webhooks/default/secret). GET /v1/predictions lists them newest first, 100 a page (`next` is the
 * following page's URL), from `created_after` when given; every prediction carries its `webhook` and
 * `webhook_events_filter`, as the webhook bodies and the official clients' Prediction type show. GET /v1/account
 * answers the token's account.
 */
interface Prediction {
  id: string;
  outcome: FakeOutcome;
  state: 'queued' | 'running' | 'ended';
  model: string;
  version: string;
  input: Record<string, unknown>;
  status: 'starting' | 'processing' | 'succeeded' | 'failed' | 'canceled';
  output: string | null;
  error: string | null;
  logs: string;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
  webhook?: string;
  filter: string[];
}

export interface ReplicateFake extends FakeServer {
  token: string;
  secret: string;
  predictions: Map<string, Prediction>;
  /** Predictions still starting or processing. */
  live(): Prediction[];
}

const FAILURES: Record<Exclude<FakeOutcome, 'succeed' | 'hang'>, string> = {
  content: 'NSFW content detected. Try running it again, or try a different prompt.',
  input: 'Invalid input: num_frames must be one of 81, 121',
  oom: 'CUDA out of memory. Tried to allocate 2.00 GiB',
  internal: 'Prediction interrupted; please retry (code: PA)',
};

export async function startReplicateFake(knobs: Partial<FakeKnobs> = {}): Promise<ReplicateFake> {
  const token = `r8_${randomBytes(12).toString('hex')}`;
  const secret = `whsec_${randomBytes(24).toString('base64')}`;
  const predictions = new Map<string, Prediction>();

  const view = (p: Prediction) => ({
    id: p.id,
    model: p.model,
    version: p.version,
    input: p.input,
    logs: p.logs,
    output: p.output,
    data_removed: false,
    error: p.error,
    status: p.status,
    created_at: p.created_at,
    started_at: p.started_at,
    completed_at: p.completed_at,
    urls: { get: `${fake.url}/v1/predictions/${p.id}`, cancel: `${fake.url}/v1/predictions/${p.id}/cancel`, stream: `${fake.url}/stream/${p.id}` },
    metrics: p.completed_at ? { predict_time: 1.5 } : {},
    source: 'api',
    ...(p.webhook ? { webhook: p.webhook, webhook_events_filter: p.filter } : {}),
  });

  const PAGE = 100;
  /** GET /v1/predictions: newest first, from `created_after` (inclusive) and before `created_before`, a page at a time. */
  function list(req: FakeRequest): FakeAnswer {
    const after = req.query.get('created_after');
    const before = req.query.get('created_before');
    const offset = Number(Buffer.from(req.query.get('cursor') ?? '', 'base64url').toString() || 0);
    const all = [...predictions.values()]
      .filter((p) => (!after || p.created_at >= new Date(after).toISOString()) && (!before || p.created_at < new Date(before).toISOString()))
      .reverse();
    const page = all.slice(offset, offset + PAGE);
    const nextUrl = new URL(`${fake.url}/v1/predictions`);
    for (const [k, v] of req.query) if (k !== 'cursor') nextUrl.searchParams.set(k, v);
    nextUrl.searchParams.set('cursor', Buffer.from(String(offset + PAGE)).toString('base64url'));
    return { status: 200, body: { previous: null, next: offset + PAGE < all.length ? nextUrl.toString() : null, results: page.map(view) } };
  }

  const notify = (p: Prediction, event: 'start' | 'completed') => {
    if (!p.webhook || !p.filter.includes(event)) return;
    const body = JSON.stringify(view(p));
    // One id per event, kept across retries and duplicates: a receiver can tell a repeat.
    const id = `msg_${randomBytes(12).toString('hex')}`;
    fake.deliver(p.webhook, () => ({ ...signWebhook(secret, id, body) }), body);
  };

  const end = (p: Prediction) => {
    p.completed_at = new Date().toISOString();
    if (p.outcome === 'succeed') {
      p.status = 'succeeded';
      p.logs += '100%|##########| 30/30\n';
      p.output = `${fake.url}/files/${p.id}/output.mp4`;
    } else if (p.outcome !== 'hang') {
      p.status = 'failed';
      p.error = FAILURES[p.outcome];
    }
    notify(p, 'completed');
  };

  function create(req: FakeRequest, model: string, version: string): FakeAnswer {
    const body = (req.body ?? {}) as { input?: Record<string, unknown>; webhook?: string; webhook_events_filter?: string[] };
    if (!body.input || typeof body.input.prompt !== 'string' || body.input.prompt === '') {
      return { status: 422, body: { title: 'Input validation failed', detail: '- input: prompt is required', status: 422, invalid_fields: [{ field: 'input.prompt', type: 'required' }] } };
    }
    const p: Prediction = {
      id: randomBytes(13).toString('base64url').toLowerCase().replace(/[^a-z0-9]/g, 'q').slice(0, 26),
      outcome: outcomeOf(body.input.prompt),
      state: 'queued',
      model,
      version,
      input: body.input,
      status: 'starting',
      output: null,
      error: null,
      logs: '',
      created_at: new Date().toISOString(),
      started_at: null,
      completed_at: null,
      webhook: body.webhook,
      // Replicate's default filter, when none is given, is every event; start and completed are what we ask for.
      filter: body.webhook_events_filter ?? ['start', 'output', 'logs', 'completed'],
    };
    predictions.set(p.id, p);
    jobs.add(p);
    return { status: 201, body: view(p) };
  }

  const fake: FakeServer = await startFakeServer((req) => {
    if (req.headers.authorization !== `Bearer ${token}`) return { status: 401, body: { title: 'Unauthenticated', detail: 'You did not pass a valid authentication token', status: 401 } };
    const byModel = /^\/v1\/models\/([\w.-]+)\/([\w.-]+)\/predictions$/.exec(req.path);
    if (req.method === 'POST' && byModel) return create(req, `${byModel[1]}/${byModel[2]}`, 'latest');
    if (req.method === 'POST' && req.path === '/v1/predictions') {
      const version = (req.body as { version?: string } | undefined)?.version;
      if (!version) return { status: 422, body: { title: 'Input validation failed', detail: '- version: version is required', status: 422 } };
      return create(req, 'pinned', version);
    }
    if (req.method === 'GET' && req.path === '/v1/webhooks/default/secret') return { status: 200, body: { key: secret } };
    if (req.method === 'GET' && req.path === '/v1/predictions') return list(req);
    if (req.method === 'GET' && req.path === '/v1/account') return { status: 200, body: { type: 'user', username: 'videogen', name: 'Videogen', github_url: null } };
    const one = /^\/v1\/predictions\/([\w-]+)(\/cancel)?$/.exec(req.path);
    const p = one ? predictions.get(one[1]) : undefined;
    if (one && !p) return { status: 404, body: { title: 'Not found', detail: 'Not found.', status: 404 } };
    if (p && req.method === 'GET' && !one![2]) return { status: 200, body: view(p) };
    if (p && req.method === 'POST' && one![2]) {
      if (p.state !== 'ended') {
        p.state = 'ended';
        p.status = 'canceled';
        p.completed_at = new Date().toISOString();
        notify(p, 'completed');
      }
      return { status: 200, body: view(p) };
    }
    return undefined;
  }, knobs);

  const jobs = new FakeJobs<Prediction>(fake.knobs, {
    start(p) {
      p.status = 'processing';
      p.started_at = new Date().toISOString();
      p.logs = 'Generating video...\n 10%|#         | 3/30\n';
      notify(p, 'start');
    },
    end,
  });

  const close = fake.close.bind(fake);
  return Object.assign(fake, {
    token,
    secret,
    predictions,
    live: () => jobs.live(),
    async close() {
      jobs.stop();
      await close();
    },
  });
}
