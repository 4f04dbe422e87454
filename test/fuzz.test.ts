import fc from 'fast-check';
import { operations } from '../src/api/openapi-operations';
import fs from 'node:fs';
import path from 'node:path';
import { startWebhookReceiver, type WebhookReceiver } from './notification-helpers';
import { UNLIMITED_ADMISSION } from './fairness-helpers';
import { apiClient, eventually, startStack, type Stack } from './harness';

/**
 * Fuzzing every public endpoint on the real stack: ≥ 10,000 generated requests (fast-check), 50 at a time, from other
 * users, with malformed JSON, wrong types, huge and unicode prompts, bad ids, cursors, dates, keys and headers, aimed
 * mostly at a victim user's resources. No answer may be a 5xx (or hang), the service must still work afterwards, and
 * the victim's jobs, notifications, webhook endpoints, deliveries, credits and keys must be exactly as they were.
 */
const BATCH = 50;
const RUNS = 205;
const SEED = Number(process.env.TEST_FUZZ_SEED ?? Date.now() % 2 ** 31);

interface FuzzRequest {
  /** The route it was made for, e.g. `POST /v1/generations/:id/cancel`. */
  route: string;
  method: string;
  path: string;
  query: string;
  auth: 'attacker' | 'admin' | 'none' | 'garbage' | 'basic' | 'long' | 'mangled';
  headers: Record<string, string>;
  body?: string;
}

interface Finding {
  request: FuzzRequest;
  status: number | 'timeout';
  answer: string;
}

/** The routes: every documented operation, plus the backend's callback, the docs and status pages, and no route at all. */
const ROUTES = [
  ...operations.map((o) => ({ method: o.method.toUpperCase(), path: o.path })),
  { method: 'POST', path: '/internal/backend/callbacks' },
  { method: 'GET', path: '/docs' },
  { method: 'GET', path: '/' },
  { method: 'GET', path: '/v1/nothing/:id' },
];

const ascii = (maxLength: number) => fc.string({ unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)), maxLength });
const latin1 = (maxLength: number) => fc.string({ unit: fc.integer({ min: 0x20, max: 0xff }).map((c) => String.fromCharCode(c)), maxLength });
const b64 = (value: unknown) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value) ?? 'undefined').toString('base64url');

const ODD_STRINGS = ['', ' ', '\u0000', 'a\u0000b', '..', '%', '%00', '%E0%A4%A', 'null', 'undefined', '-1', '0', "' or 1=1 --", '\ud800', '🦊', '\u202e', 'x'.repeat(5_000)];
const ODD_DATES = ['0000-01-01T00:00:00Z', '0001-01-01T00:00:00Z', '9999-12-31T23:59:59Z', '2024-02-30T00:00:00Z', '2024-01-01T00:00:00+25:00', '+275760-09-13T00:00:00.000Z', '-000001-01-01T00:00:00.000Z', '1970-01-01T00:00:00.000Z', 'now', ''];

function arbitraries(ids: string[]) {
  const weird = fc.oneof(fc.constantFrom(...ODD_STRINGS), fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 20 }), fc.string({ unit: 'binary', maxLength: 20 }));
  const id = fc.oneof({ weight: 4, arbitrary: fc.constantFrom(...ids) }, { weight: 2, arbitrary: weird }, { weight: 1, arbitrary: fc.string({ unit: fc.constantFrom(...'0123456789abcdef'), minLength: 32, maxLength: 32 }).map((h) => `gen_${h}`) });
  const date = fc.oneof(fc.constantFrom(...ODD_DATES), fc.date().map((d) => (Number.isNaN(d.getTime()) ? 'Invalid Date' : d.toISOString())), weird);
  const cursor = fc.oneof(
    weird,
    fc.tuple(date, fc.oneof(id, weird)).map(b64),
    fc.jsonValue().map(b64),
    fc.constantFrom(b64('[]'), b64('[1,2]'), b64('{"a":1}'), b64('not json'), '!!!', '====', 'eyJ'),
  );
  const queryValue = fc.oneof(
    fc.constantFrom('-1', '0', '1', '20', '100', '101', '1e3', 'NaN', 'Infinity', '20.5', '0x10', 'true', 'false', 'queued', 'succeeded', 'bogus'),
    date,
    cursor,
    weird,
  );
  const query = fc
    .array(fc.tuple(fc.constantFrom('limit', 'cursor', 'status', 'created_after', 'created_before', 'unread', 'last_event_id', 'foo', 'limit[]', 'cursor[x]'), queryValue), { maxLength: 4 })
    .map((pairs) => new URLSearchParams(pairs).toString());

  const webhookUrl = fc.oneof<fc.Arbitrary<unknown>[]>(
    fc.constantFrom<unknown>('http://127.0.0.1:1/hook', 'https://hooks.example.invalid/x', 'http://[::1]/', 'ftp://x.invalid/', 'javascript:alert(1)', 'http://169.254.169.254/latest', 'http://10.0.0.1/', 'http://localhost', 'https://', null),
    weird,
    fc.integer(),
  );
  const prompt = fc.oneof(
    fc.string({ minLength: 1, maxLength: 200 }),
    fc.string({ unit: 'grapheme', minLength: 1, maxLength: 200 }),
    fc.string({ unit: 'binary', minLength: 1, maxLength: 200 }),
    fc.constantFrom(...ODD_STRINGS),
    fc.integer({ min: 3_990, max: 4_010 }).map((n) => 'p'.repeat(n)),
    fc.integer({ min: 1_990, max: 2_010 }).map((n) => '🦊'.repeat(n)),
    fc.integer({ min: 4_000, max: 30_000 }).map((n) => 'é'.repeat(n)),
  );
  const anything = fc.anything({ maxDepth: 3 });
  /** Present one time in `1 + absentWeight`. */
  const sometimes = <T>(arbitrary: fc.Arbitrary<T>, absentWeight = 4) => fc.oneof({ weight: absentWeight, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary });
  /** Mostly what the field accepts, sometimes anything at all: most requests get past validation, one field at a time does not. */
  const mostly = <T>(valid: fc.Arbitrary<T>, wild: fc.Arbitrary<unknown>) => fc.oneof({ weight: 6, arbitrary: valid as fc.Arbitrary<unknown> }, { weight: 1, arbitrary: wild });
  const generationBody = fc.record(
    {
      prompt: mostly(prompt, anything),
      duration_seconds: mostly(fc.integer({ min: 1, max: 60 }), fc.oneof(fc.integer({ min: -5, max: 100 }), fc.double(), fc.constantFrom(null, '5', 1e300, 2 ** 53))),
      resolution: mostly(fc.constantFrom('480p', '720p', '1080p'), fc.oneof(fc.constantFrom('4k', 'p'), anything)),
      aspect_ratio: mostly(fc.constantFrom('16:9', '9:16', '1:1'), fc.oneof(fc.constantFrom('4:3'), anything)),
      seed: mostly(fc.oneof(fc.constant(null), fc.integer({ min: 0, max: 2 ** 32 - 1 })), fc.oneof(fc.integer(), fc.double(), fc.constantFrom(-1, 2 ** 32, 2 ** 40, '7'))),
      webhook_url: mostly(fc.constantFrom(null, 'http://127.0.0.1:9/hook'), webhookUrl),
      metadata: mostly(fc.dictionary(fc.string({ maxLength: 64 }), fc.string({ maxLength: 500 }), { maxKeys: 16 }), fc.oneof(fc.dictionary(weird, weird, { maxKeys: 20 }), anything)),
      extra: sometimes(anything, 9),
    },
    { requiredKeys: ['prompt'] },
  ).map(({ extra, ...body }) => (extra === undefined ? body : { ...body, extra }));
  const endpointBody = fc.record(
    {
      url: mostly(fc.constantFrom('http://127.0.0.1:9/hook', 'http://localhost:9/hook'), webhookUrl),
      events: mostly(fc.uniqueArray(fc.constantFrom('generation.succeeded', 'generation.failed', 'generation.canceled'), { maxLength: 3 }), fc.oneof(fc.array(fc.constantFrom('x', 'generation.succeeded'), { maxLength: 5 }), anything)),
      description: mostly(fc.string({ maxLength: 500 }), fc.oneof(weird, anything)),
    },
    { requiredKeys: ['url'] },
  );
  const otherBody = fc.record(
    {
      capacity: fc.oneof(fc.integer({ min: -2, max: 200_000 }), anything),
      overlap_seconds: fc.oneof(fc.integer(), anything),
      grace_seconds: fc.oneof(fc.integer({ min: -1, max: 90_000 }), anything),
      name: weird,
      tier: fc.oneof(fc.constantFrom('free', 'pro', 'god'), weird),
    },
    { requiredKeys: [] },
  );
  /** The body a route expects (nearly), or any JSON, or broken JSON, or none. */
  const bodyFor = (routeBody: fc.Arbitrary<unknown>) =>
    fc.oneof(
      { weight: 8, arbitrary: routeBody.map((b) => JSON.stringify(b)) },
      { weight: 1, arbitrary: fc.json({ maxDepth: 4 }) },
      { weight: 1, arbitrary: fc.json({ maxDepth: 3 }).map((s) => s.slice(0, Math.max(0, s.length - 1))) },
      {
        weight: 1,
        arbitrary: fc.constantFrom('{', '{"prompt":', '{"prompt":"a"}}', '[', 'nul', '"\\ud800"', '{"prompt":"\\u0000"}', '{"prompt":"a","metadata":{"k":"\\ud800"}}', '{"__proto__":{"x":1},"prompt":"a"}', '['.repeat(20_000) + ']'.repeat(20_000), `{"prompt":"${'x'.repeat(70_000)}"}`),
      },
      { weight: 1, arbitrary: weird },
      { weight: 1, arbitrary: fc.constant(undefined) },
    );
  const bodies = fc.record({ generation: bodyFor(generationBody), endpoint: bodyFor(endpointBody), other: bodyFor(otherBody) });
  const keyChars = fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c));
  const headers = fc
    .record({
      'content-type': fc.oneof(
        { weight: 6, arbitrary: fc.constant('application/json') },
        { weight: 1, arbitrary: fc.constantFrom('text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=latin1', 'application/json; charset=utf-16', 'multipart/form-data; boundary=x', 'application/json; charset=nope') },
      ),
      'idempotency-key': sometimes(fc.oneof({ weight: 4, arbitrary: fc.string({ unit: keyChars, minLength: 1, maxLength: 64 }) }, { weight: 1, arbitrary: fc.oneof(ascii(40), latin1(20), fc.constantFrom('fuzz-key', 'victim-key', 'x'.repeat(300))) }), 1),
      'last-event-id': sometimes(fc.oneof(ascii(20), fc.constantFrom('0', '1', '999999999999999', '9999999999999999', '-1', '1.5'))),
      'x-request-id': sometimes(ascii(200)),
      'content-encoding': sometimes(fc.constantFrom('gzip', 'deflate', 'br', 'identity', 'bogus'), 9),
      'webhook-id': sometimes(ascii(40)),
      'webhook-timestamp': sometimes(fc.oneof(fc.integer().map(String), ascii(12))),
      'webhook-signature': sometimes(fc.oneof(ascii(80), fc.constant('v1,AAAA'))),
    })
    .map((all) => Object.fromEntries(Object.entries(all).filter(([, value]) => value !== undefined)) as Record<string, string>);
  // Submits and listings weigh more: they reach the most code (admission, credits, Temporal, keyset pages).
  const route = fc.oneof({ weight: 6, arbitrary: fc.constantFrom(...ROUTES) }, { weight: 2, arbitrary: fc.constantFrom(...ROUTES.filter((r) => r.path === '/v1/generations')) });
  return fc
    .record({
      route,
      params: fc.array(fc.tuple(id, fc.boolean()), { minLength: 2, maxLength: 2 }),
      method: fc.oneof({ weight: 9, arbitrary: fc.constant<string | null>(null) }, { weight: 1, arbitrary: fc.constantFrom<string | null>('GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS') }),
      query,
      auth: fc.constantFrom<FuzzRequest['auth']>('attacker', 'attacker', 'attacker', 'attacker', 'admin', 'none', 'garbage', 'basic', 'long', 'mangled'),
      headers,
      bodies,
    })
    .map(({ route, params, method, query, auth, headers, bodies }): FuzzRequest => {
      const body = route.path === '/v1/generations' ? bodies.generation : route.path.startsWith('/v1/webhook-endpoints') ? bodies.endpoint : bodies.other;
      let n = 0;
      // A path parameter is sent percent-encoded, or raw (malformed encodings, slashes and all).
      const path = route.path.replace(/:\w+/g, () => {
        const [value, raw] = params[n++ % params.length];
        if (raw) return value;
        try {
          return encodeURIComponent(value);
        } catch {
          return value; // a lone surrogate cannot be encoded: sent raw
        }
      });
      const verb = method ?? route.method;
      return { route: `${route.method} ${route.path}`, method: verb, path, query, auth, headers, body: verb === 'GET' || verb === 'HEAD' ? undefined : body };
    });
}

describe('fuzzed requests against every public endpoint', () => {
  let stack: Stack;
  let receiver: WebhookReceiver;
  let victim: { userId: string; apiKey: string };
  let attackerKey: string;
  const victimIds: string[] = [];

  /** Everything the service stores about the victim. */
  async function snapshotOfVictim() {
    const { sql } = stack.database;
    const id = victim.userId;
    return {
      user: await sql`select * from users where id = ${id}`,
      keys: await sql`select * from api_keys where user_id = ${id} order by id`,
      generations: await sql`select * from generations where user_id = ${id} order by id`,
      idempotency: await sql`select * from idempotency_keys where user_id = ${id} order by key`,
      notifications: await sql`select * from notifications where user_id = ${id} order by id`,
      endpoints: await sql`select * from webhook_endpoints where user_id = ${id} order by id`,
      deliveries: await sql`select * from webhook_deliveries where user_id = ${id} order by id`,
      attempts: await sql`select a.* from webhook_delivery_attempts a join webhook_deliveries d on d.id = a.delivery_id where d.user_id = ${id} order by a.delivery_id, a.attempt`,
      requestSecrets: await sql`select * from webhook_request_secrets where user_id = ${id}`,
      credits: await sql`select * from credit_accounts where user_id = ${id}`,
      ledger: await sql`select * from credit_ledger where user_id = ${id} order by id`,
    };
  }

  beforeAll(async () => {
    // Admission out of the way, so fuzzed submits reach credits, idempotency, Temporal and the projection.
    stack = await startStack({ env: UNLIMITED_ADMISSION });
    receiver = await startWebhookReceiver();
    victim = await stack.createUser('pro');
    const victimApi = apiClient(stack.apiUrl, victim.apiKey);
    const endpoint = await victimApi.call('POST', '/v1/webhook-endpoints', { url: receiver.url });
    expect(endpoint.status).toBe(201);
    const job = await victimApi.submit({ prompt: 'the victim’s own video' }, 'victim-key');
    expect(job.status).toBe(202);
    await victimApi.waitForTerminal(job.body.id);
    // The notification is written just after the terminal row.
    const notification = await eventually(async () => (await victimApi.call('GET', '/v1/notifications')).body.data[0]);
    const delivery = await eventually(async () => {
      const res = await victimApi.call('GET', `/v1/webhook-endpoints/${endpoint.body.id}/deliveries`);
      return res.body.data[0]?.status === 'succeeded' ? res.body.data[0] : undefined;
    });
    victimIds.push(job.body.id, notification.id, endpoint.body.id, delivery.id, victim.userId);
    attackerKey = (await stack.createUser('free')).apiKey;
  });

  afterAll(async () => {
    await receiver?.close();
    await stack?.close();
  });

  test('≥ 10,000 requests: no 5xx, no hang, the service still works, the victim’s data untouched', async () => {
    const before = await snapshotOfVictim();
    const attacker = apiClient(stack.apiUrl, attackerKey);
    const own = await attacker.submit({ prompt: 'the attacker’s own job' }, 'fuzz-key');
    const ownEndpoint = await attacker.call('POST', '/v1/webhook-endpoints', { url: receiver.url });
    const ids = [...victimIds, own.body.id, ownEndpoint.body.id];
    // An operator may revoke or add anyone's keys: the admin's key changes go to a bystander, not to the victim.
    const bystander = await stack.createUser('free');
    const keys: Record<FuzzRequest['auth'], string | undefined> = {
      attacker: `Bearer ${attackerKey}`,
      admin: `Bearer ${stack.adminApiKey}`,
      none: undefined,
      garbage: 'Bearer vg_not-a-key',
      basic: `Basic ${Buffer.from('a:b').toString('base64')}`,
      long: `Bearer ${'k'.repeat(10_000)}`,
      mangled: `bearer  ${attackerKey.toUpperCase()}  `,
    };

    let sent = 0;
    const findings: Finding[] = [];
    const statuses = new Map<number, number>();
    const byRoute: Record<string, Record<number, number>> = {};
    async function send(request: FuzzRequest): Promise<void> {
      const headers = { ...request.headers, ...(keys[request.auth] ? { authorization: keys[request.auth]! } : {}) };
      if (request.auth === 'admin' && request.method !== 'GET' && request.route.includes(' /admin/users/:id/api-keys')) {
        request = { ...request, path: request.path.split(victim.userId).join(bystander.userId) };
      }
      const abort = new AbortController();
      let answered = false;
      let hung = false;
      const timer = setTimeout(() => {
        hung = true;
        abort.abort();
      }, 15_000);
      try {
        const res = await fetch(`${stack.apiUrl}${request.path}${request.query ? `?${request.query}` : ''}`, { method: request.method, headers, body: request.body, signal: abort.signal });
        answered = true;
        sent++;
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const counts = (byRoute[request.route] ??= {});
        counts[res.status] = (counts[res.status] ?? 0) + 1;
        // An event stream never ends by itself: its status is the answer.
        const stream = res.headers.get('content-type')?.startsWith('text/event-stream');
        const answer = stream ? '' : await res.text();
        if (stream) abort.abort();
        // The attacker rotated its own key: it carries on with the new one.
        if (request.route === 'POST /v1/api-keys/rotate' && request.auth === 'attacker' && res.status === 201) keys.attacker = `Bearer ${JSON.parse(answer).api_key}`;
        if (res.status >= 500) findings.push({ request, status: res.status, answer: answer.slice(0, 300) });
      } catch (err) {
        if (hung) {
          if (!answered) sent++;
          findings.push({ request, status: 'timeout', answer: String(err) });
        }
        // Otherwise fetch refused to send it (an invalid header value, say): not a request the server saw.
      } finally {
        clearTimeout(timer);
      }
    }

    // Requests that once answered 500 (NUL bytes, unpaired surrogates, years Postgres refuses), sent every run.
    const regressions: Array<Pick<FuzzRequest, 'method' | 'path' | 'query' | 'body'>> = [
      { method: 'GET', path: '/v1/generations/%00', query: '' },
      { method: 'POST', path: `/v1/notifications/a%00b/read`, query: '' },
      { method: 'GET', path: '/v1/generations', query: `cursor=${b64(['0000-01-01T00:00:00.000Z', 'gen_x'])}` },
      { method: 'GET', path: '/v1/generations', query: `cursor=${b64(['2024-01-01T00:00:00.000Z', 'gen_\u0000'])}` },
      { method: 'GET', path: '/v1/notifications', query: `cursor=${b64(['+275760-09-13T00:00:00.000Z', 'x'])}` },
      { method: 'GET', path: '/v1/generations', query: 'created_after=0000-01-01T00:00:00Z' },
      { method: 'POST', path: '/v1/generations', query: '', body: JSON.stringify({ prompt: 'a\u0000b' }) },
      { method: 'POST', path: '/v1/generations', query: '', body: '{"prompt":"a","metadata":{"k":"\\ud800"}}' },
      { method: 'POST', path: '/v1/webhook-endpoints', query: '', body: JSON.stringify({ url: 'http://127.0.0.1:9/x', description: '\u0000' }) },
    ];
    for (const r of regressions) await send({ ...r, route: 'regression', auth: 'attacker', headers: { 'content-type': 'application/json' } });

    const started = Date.now();
    await fc.assert(
      fc.asyncProperty(fc.array(arbitraries(ids), { minLength: BATCH, maxLength: BATCH }), async (batch) => {
        await Promise.all(batch.map(send));
      }),
      { numRuns: RUNS, seed: SEED },
    );
    const seconds = (Date.now() - started) / 1000;
    const summary = [...statuses].sort(([a], [b]) => a - b).map(([s, n]) => `${s}×${n}`).join(' ');
    process.stdout.write(`fuzz: ${sent} requests in ${seconds.toFixed(0)} s (seed ${SEED}): ${summary}\n`);

    // Every finding, whole, for whoever fixes it.
    fs.writeFileSync(path.join(__dirname, 'artifacts', 'fuzz-findings.json'), JSON.stringify({ seed: SEED, sent, statuses: Object.fromEntries(statuses), byRoute, findings }, null, 2));
    expect(findings.map((f) => ({ ...f, request: { ...f.request, body: f.request.body?.slice(0, 300) } }))).toEqual([]);
    expect(sent).toBeGreaterThanOrEqual(10_000);
    // Still serving, and still generating: a fresh user's job goes all the way.
    expect((await fetch(`${stack.apiUrl}/readyz`)).status).toBe(200);
    const fresh = apiClient(stack.apiUrl, (await stack.createUser('pro')).apiKey);
    const after = await fresh.submit({ prompt: 'after the storm' });
    expect((await fresh.waitForTerminal(after.body.id)).status).toBe('succeeded');
    expect(await snapshotOfVictim()).toEqual(before);
  }, 300_000); // about 30 s on an idle 2-core machine, a few times that when the machine is shared
});
