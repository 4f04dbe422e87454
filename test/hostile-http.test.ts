import { randomBytes } from 'node:crypto';
import { createDatabase } from '../src/db/client';
import { openEventStream, type EventStreamClient } from './notification-helpers';
import { apiClient, eventually, startStack, testEnv, type Stack } from './harness';
import { metric, rawSocket, startApiWith, type ApiProcess } from './hostile-helpers';
import { createLogger } from '../src/lib/logger';
import { generateWebhookSecret, signWebhook } from '../src/lib/webhook-signature';
import { EARLY_ROUTE } from '../src/api/early-refusals';
import { startImageServer } from './image-server';

/**
 * The API under hostile clients at the HTTP layer: keys guessed from one address, headers sent slowly, too many
 * connections, statements that would wait for ever, and a user flooding submits. Each test runs an API instance of its
 * own, with the limit it tests, on one stack.
 */
describe('the API under hostile clients', () => {
  let stack: Stack;
  const apis: ApiProcess[] = [];
  const sockets: Array<ReturnType<typeof rawSocket>> = [];
  const streams: EventStreamClient[] = [];
  const api = async (overrides: Parameters<typeof startApiWith>[1]) => {
    const started = await startApiWith(stack, overrides);
    apis.push(started);
    return started;
  };
  const socket = (url: string) => {
    const s = rawSocket(url);
    sockets.push(s);
    return s;
  };
  const bogusKey = () => `vg_${randomBytes(24).toString('base64url')}`;

  beforeAll(async () => {
    stack = await startStack({ env: { RATE_LIMIT_BURST: '3', RATE_LIMIT_PER_SECOND: '0.2' } });
  });
  afterAll(async () => {
    for (const s of sockets) s.socket.destroy();
    for (const s of streams) s.close();
    for (const a of apis) await a.close({ graceMs: 0 });
    await stack?.close();
  });

  test('after a burst of failed authentications from an address, its unknown keys are refused 429 without a query; known keys pass', async () => {
    const { url } = await api({ api: { authFailureBurst: 5, authFailuresPerSecond: 0.01 } });
    const user = await stack.createUser('pro');
    const known = apiClient(url, user.apiKey);
    expect((await known.list()).status).toBe(200);
    const newcomer = await stack.createUser('pro');

    const unrouted = { route: '/v1/generations (unrouted)', status: '4xx' };
    const refusedByMount = await metric(url, 'vg_http_request_duration_seconds_count', unrouted);
    const burst = await Promise.all(Array.from({ length: 5 }, () => apiClient(url, bogusKey()).list()));
    expect(burst.map((r) => r.status)).toEqual([401, 401, 401, 401, 401]);
    // Refused by the mount's authentication before any route took them: labelled with the mount, not `unmatched`.
    expect((await metric(url, 'vg_http_request_duration_seconds_count', unrouted)) - refusedByMount).toBe(5);
    const lookups = await metric(url, 'vg_api_key_lookups_total');
    const early = { route: EARLY_ROUTE, status: '4xx' };
    const answeredEarly = await metric(url, 'vg_http_request_duration_seconds_count', early);
    const after = await Promise.all(Array.from({ length: 50 }, () => apiClient(url, bogusKey()).list()));
    expect(new Set(after.map((r) => `${r.status} ${r.body?.error?.code}`))).toEqual(new Set(['429 too_many_failed_auth']));
    expect(Number(after[0].headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(after[0].headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    expect(await metric(url, 'vg_api_key_lookups_total')).toBe(lookups);
    // Each was answered from the raw request, before routing (src/api/early-refusals.ts), as the routed refusal would be.
    expect((await metric(url, 'vg_http_request_duration_seconds_count', early)) - answeredEarly).toBe(50);
    // A guess sent to a page that needs no key is served: the key is not what decides there.
    expect((await fetch(`${url}/healthz`, { headers: { authorization: `Bearer ${bogusKey()}` } })).status).toBe(200);

    expect((await known.list()).status).toBe(200);
    // A key this process never saw is unknown too, until the address's bucket refills.
    expect((await apiClient(url, newcomer.apiKey).list()).status).toBe(429);
    // Requests without a key are answered 401 as ever (they cost no query).
    expect((await fetch(`${url}/v1/generations`)).status).toBe(401);
  });

  test("a burst of requests with one key the process does not hold costs one look-up; a revocation meanwhile is not missed", async () => {
    const { url, adminUrl } = await api({});
    const user = await stack.createUser('pro');
    const lookups = await metric(url, 'vg_api_key_lookups_total');
    const burst = await Promise.all(Array.from({ length: 40 }, () => apiClient(url, user.apiKey).list()));
    expect(burst.map((r) => r.status)).toEqual(Array.from({ length: 40 }, () => 200));
    expect((await metric(url, 'vg_api_key_lookups_total')) - lookups).toBe(1);

    // Revoked through this process, the key is refused at once, even by requests sent with the revocation.
    expect((await apiClient(adminUrl, stack.adminApiKey).call('POST', `/admin/users/${user.userId}/api-keys/revoke`)).status).toBe(200);
    const after = await Promise.all(Array.from({ length: 10 }, () => apiClient(url, user.apiKey).list()));
    expect(after.map((r) => r.status)).toEqual(Array.from({ length: 10 }, () => 401));
  });

  test('a client that sends its headers slowly is answered 408 and disconnected; a stream outlives the request deadline', async () => {
    const { url } = await api({ api: { headersTimeoutMs: 1_000, requestTimeoutMs: 1_000 } });
    const slow = socket(url);
    await slow.connected;
    slow.socket.write('GET /v1/generations HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    const drip = setInterval(() => slow.socket.write(`X-Slow-${Date.now()}: a\r\n`), 100);
    try {
      await eventually(async () => (slow.closed ? true : undefined), { timeoutMs: 10_000, what: 'the slow socket to be closed' });
    } finally {
      clearInterval(drip);
    }
    expect(slow.received).toMatch(/^HTTP\/1\.1 408/);

    const user = await stack.createUser('pro');
    const stream = await openEventStream(`${url}/v1/events`, user.apiKey);
    streams.push(stream);
    // Keep-alives every second (the stack's SSE_KEEPALIVE_MS): three of them is three request deadlines later.
    await stream.waitFor((_events, comments) => comments >= 3, 10_000);
    expect(stream.ended).toBe(false);
  });

  test('connections beyond the cap are answered 503 with a body and closed; a freed one lets the next in', async () => {
    const { url } = await api({ api: { maxConnections: 3 } });
    const idle = [socket(url), socket(url), socket(url)];
    await Promise.all(idle.map((s) => s.connected));
    // Counted once the server has accepted them: a request on each proves it.
    for (const s of idle) s.socket.write('GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    await eventually(async () => (idle.every((s) => s.received.startsWith('HTTP/1.1 200')) ? true : undefined), { what: 'the idle connections to be served' });

    const extra = socket(url);
    await eventually(async () => (extra.closed ? true : undefined), { what: 'the extra connection to be closed' });
    expect(extra.received).toMatch(/^HTTP\/1\.1 503/);
    expect(extra.received).toMatch(/retry-after: 1/i);
    expect(JSON.parse(extra.received.slice(extra.received.indexOf('\r\n\r\n') + 4))).toEqual({ error: { code: 'too_many_connections', message: expect.any(String) } });

    idle[0].socket.destroy();
    const res = await eventually(async () => {
      const r = await fetch(`${url}/healthz`).catch(() => undefined);
      return r?.status === 200 ? r : undefined;
    }, { what: 'a connection once one closed' });
    expect(res.status).toBe(200);
  });

  test('a statement that waits past DATABASE_STATEMENT_TIMEOUT_MS is canceled and the request answered 503', async () => {
    const { url } = await api({ database: { statementTimeoutMs: 300 } });
    const user = await stack.createUser('pro');
    const holder = await stack.database.sql.reserve();
    try {
      // The user's admission lock (vg_admit_submission), held as a concurrent submit would hold it.
      await holder`begin`;
      await holder`select pg_advisory_xact_lock(hashtextextended(${`admission:${user.userId}`}, 0))`;
      const answered = apiClient(url, user.apiKey).submit({ prompt: 'waits behind a lock' });
      const res = await Promise.race([answered, new Promise<undefined>((r) => setTimeout(() => r(undefined), 15_000))]);
      expect(res).toMatchObject({ status: 503, body: { error: { code: 'database_timeout' } } });
      expect(res!.headers.get('retry-after')).toBe('1');
    } finally {
      await holder`rollback`;
      holder.release();
    }
    // The migration step's pool has none: the same pool settings without a timeout wait as long as they must.
    const plain = createDatabase(testEnv().databaseUrl, { max: 1 });
    const [{ statement_timeout: none }] = await plain.sql<{ statement_timeout: string }[]>`show statement_timeout`;
    await plain.close();
    expect(none).toBe('0');
  });

  test("one user's concurrent submits wait their turn in the process, not in Postgres, so others' requests still find a connection", async () => {
    const { url } = await api({});
    const [flooder, other] = [await stack.createUser('pro'), await stack.createUser('pro')];
    const holder = await stack.database.sql.reserve();
    let flood: Promise<unknown> | undefined;
    try {
      // The flooder's admissions stall behind its lock, as behind a slow one; more of them than the API's pool (10).
      await holder`begin`;
      await holder`select pg_advisory_xact_lock(hashtextextended(${`admission:${flooder.userId}`}, 0))`;
      const client = apiClient(url, flooder.apiKey);
      flood = Promise.all(Array.from({ length: 20 }, (_, i) => client.submit({ prompt: `flood ${i}` })));
      await eventually(async () => {
        const [{ waiting }] = await stack.database.sql<{ waiting: number }[]>`select count(*)::int as waiting from pg_locks where locktype = 'advisory' and not granted`;
        return waiting > 0 ? true : undefined;
      }, { what: 'a flood submit to wait for the lock' });
      const list = apiClient(url, other.apiKey).list();
      const res = await Promise.race([list, new Promise<undefined>((r) => setTimeout(() => r(undefined), 5_000))]);
      expect(res?.status).toBe(200);
    } finally {
      await holder`rollback`;
      holder.release();
      await flood;
    }
  });

  test("once a user's bucket is known empty, their submits are refused without a round trip, with the right headers; replays still answer", async () => {
    const { url } = await api({});
    const user = await stack.createUser('pro');
    const client = apiClient(url, user.apiKey);
    const admitted = await client.submit({ prompt: 'kept for a replay' }, 'kept-key');
    expect(admitted.status).toBe(202);
    let refusedBySql: Awaited<ReturnType<typeof client.submit>> | undefined;
    for (let i = 0; i < 5 && !refusedBySql; i++) {
      const res = await client.submit({ prompt: `spends the bucket ${i}` });
      if (res.status === 429) refusedBySql = res;
    }
    expect(refusedBySql?.body.error.code).toBe('rate_limited');

    // Admission holds the user's lock for each of its round trips: with it held elsewhere, only a refusal decided in
    // this process can answer.
    const holder = await stack.database.sql.reserve();
    try {
      await holder`begin`;
      await holder`select pg_advisory_xact_lock(hashtextextended(${`admission:${user.userId}`}, 0))`;
      const deadline = (p: Promise<Awaited<ReturnType<typeof client.submit>>>) =>
        Promise.race([p, new Promise<undefined>((r) => setTimeout(() => r(undefined), 3_000))]);
      const refused = await deadline(client.submit({ prompt: 'refused at once' }, 'a-new-key'));
      expect(refused).toMatchObject({ status: 429, body: { error: { code: 'rate_limited', details: { limit: 3 } } } });
      const retryAfter = Number(refused!.headers.get('retry-after'));
      expect(retryAfter).toBeGreaterThanOrEqual(1);
      expect(retryAfter).toBeLessThanOrEqual(5);
      expect(refused!.headers.get('ratelimit')).toMatch(/^"burst";r=0;t=\d+, "active";r=\d+, "daily";r=\d+;t=\d+$/);
      expect(refused!.headers.get('ratelimit-policy')).toBe(refusedBySql!.headers.get('ratelimit-policy'));
    } finally {
      await holder`rollback`;
      holder.release();
    }
    // A replay of an accepted submit is never refused, even with the bucket empty.
    const replay = await client.submit({ prompt: 'kept for a replay' }, 'kept-key');
    expect(replay.status).toBe(202);
    expect(replay.body.id).toBe(admitted.body.id);
  });

  test("a flood's submits, once its bucket is known empty, are refused before anything is read or fetched for them", async () => {
    const { url } = await api({});
    const images = await startImageServer();
    try {
      const user = await stack.createUser('pro');
      const client = apiClient(url, user.apiKey);
      let refusedBySql: Awaited<ReturnType<typeof client.submit>> | undefined;
      for (let i = 0; i < 5 && !refusedBySql; i++) {
        const res = await client.submit({ prompt: `spends the bucket ${i}` });
        if (res.status === 429) refusedBySql = res;
      }
      expect(refusedBySql?.body.error.code).toBe('rate_limited');
      const refused = { reason: 'rate_limited', tier: 'pro' };
      const refusedBefore = await metric(url, 'vg_submission_refusals_total', refused);
      const answeredBefore = await metric(url, 'vg_http_request_duration_seconds_count', { route: '/v1/generations/', status: '4xx' });

      // The image a submit names is fetched to be checked before admission: not for a submit that will be refused.
      const image = { prompt: 'a flood with an image', input_reference: `${images.url}/cat.png` };
      const fetchedBefore = images.requests.length;
      const withImage = await client.submit(image);
      const keyedWithImage = await client.submit(image, 'a-key-never-used');
      for (const res of [withImage, keyedWithImage]) expect(res).toMatchObject({ status: 429, body: { error: { code: 'rate_limited' } } });
      expect(images.requests.length).toBe(fetchedBefore);

      // A submit without a key is refused unread (src/api/early-refusals.ts): even a body that is not JSON gets the 429,
      // with what the routed refusal carries.
      const unread = await fetch(`${url}/v1/generations`, {
        method: 'POST',
        headers: { authorization: `Bearer ${user.apiKey}`, 'content-type': 'application/json', 'x-request-id': 'flood-0001' },
        body: '{"prompt": "not json',
      });
      expect(unread.status).toBe(429);
      expect(await unread.json()).toEqual({
        error: { code: 'rate_limited', message: refusedBySql!.body.error.message, details: { limit: 3, retry_after_seconds: expect.any(Number) } },
      });
      expect(unread.headers.get('x-request-id')).toBe('flood-0001');
      expect(unread.headers.get('content-type')).toBe('application/json; charset=utf-8');
      expect(Number(unread.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(unread.headers.get('ratelimit-policy')).toBe(refusedBySql!.headers.get('ratelimit-policy'));
      expect(unread.headers.get('ratelimit')).toMatch(/^"burst";r=0;t=\d+, "active";r=\d+, "daily";r=\d+;t=\d+$/);
      // Counted as refusals of the submit route, as the routed ones are.
      expect((await metric(url, 'vg_submission_refusals_total', refused)) - refusedBefore).toBe(3);
      expect((await metric(url, 'vg_http_request_duration_seconds_count', { route: '/v1/generations/', status: '4xx' })) - answeredBefore).toBe(3);

      // A keyed submit may be a replay: it goes the usual way, where its body is read first.
      const keyedUnread = await fetch(`${url}/v1/generations`, {
        method: 'POST',
        headers: { authorization: `Bearer ${user.apiKey}`, 'content-type': 'application/json', 'idempotency-key': 'another-new-key' },
        body: '{"prompt": "not json',
      });
      expect(keyedUnread.status).toBe(400);
      // And a key the process does not hold is looked up as ever: another user's submit is admitted.
      const other = await stack.createUser('pro');
      expect((await apiClient(url, other.apiKey).submit({ prompt: 'not in the flood' })).status).toBe(202);
    } finally {
      await images.close();
    }
  });

  test('floods of refusals are written as the first of each kind and a count, not a line each, at the shipped log level', async () => {
    const lines: Array<Record<string, unknown>> = [];
    const logger = createLogger('counted-api', 'info', { destination: { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) } });
    // Its own API, closed here: stopping is what writes the last counts.
    const started = await startApiWith(stack, { api: { authFailureBurst: 2, authFailuresPerSecond: 0.01 }, logger });
    const user = await stack.createUser('pro');
    const client = apiClient(started.url, user.apiKey);
    const submits = [];
    for (let i = 0; i < 30; i++) submits.push(await client.submit({ prompt: `flood ${i}` }));
    const guesses = await Promise.all(Array.from({ length: 40 }, () => apiClient(started.url, bogusKey()).list()));
    await started.close({ graceMs: 0 });
    const refusedSubmits = submits.filter((r) => r.status === 429).length;
    const refusedGuesses = guesses.filter((r) => r.status === 429).length;
    expect(refusedSubmits).toBeGreaterThanOrEqual(25);
    expect(refusedGuesses).toBeGreaterThanOrEqual(35);

    const refusalLines = lines.filter((l) => l.status === 429);
    const kinds = [
      { of: (l: Record<string, unknown>) => l.method === 'POST' && l.userId === user.userId, refused: refusedSubmits, route: '/v1/generations/' },
      { of: (l: Record<string, unknown>) => l.route === EARLY_ROUTE && l.userId === undefined, refused: refusedGuesses, route: EARLY_ROUTE },
    ];
    for (const kind of kinds) {
      const ofKind = refusalLines.filter(kind.of);
      // A refusal the error middleware answers names its route in full, as a success does.
      expect(new Set(ofKind.map((l) => l.route))).toEqual(new Set([kind.route]));
      const firsts = ofKind.filter((l) => l.msg === 'request');
      const counts = ofKind.filter((l) => l.repeats !== undefined);
      // Every refusal is accounted for, in a few lines: each window's first, and one count of its repeats.
      expect(firsts.length + counts.reduce((n, l) => n + Number(l.repeats), 0)).toBe(kind.refused);
      expect(ofKind.length).toBeLessThanOrEqual(4);
      expect(firsts[0]).toMatchObject({ requestId: expect.any(String), status: 429 });
    }
    expect(refusalLines.length).toBeLessThanOrEqual(8);
    // Answers that are not refusals are written one by one as before.
    expect(lines.filter((l) => l.msg === 'request' && l.status === 202).length).toBe(submits.filter((r) => r.status === 202).length);
  });

  test("forged backend callbacks empty their address's own bucket: its callbacks are then refused 429 unread, its users' keys still pass", async () => {
    const { url } = await api({ api: { authFailureBurst: 3, authFailuresPerSecond: 0.01 } });
    const [secret] = stack.config.backend.webhookSecrets;
    const callback = (sign: boolean) => {
      const body = JSON.stringify({
        event_id: `evt_${randomBytes(8).toString('hex')}`,
        type: 'job.succeeded',
        sequence: 2,
        job: { id: `job_${randomBytes(8).toString('hex')}`, client_key: 'gen_nothing:run:1:attempt:1', status: 'succeeded', video_url: null, error: null },
      });
      const headers = sign ? signWebhook(secret, `msg_${randomBytes(8).toString('hex')}`, body) : signWebhook(generateWebhookSecret(), 'msg_forged', body);
      return fetch(`${url}/internal/backend/callbacks`, { method: 'POST', headers: { ...headers, 'content-type': 'application/json' }, body });
    };
    const answer = async (res: Response) => `${res.status} ${((await res.json()) as { error?: { code: string } }).error?.code ?? 'ok'}`;
    expect(await answer(await callback(true))).toBe('200 ok');
    const checked = await metric(url, 'vg_backend_callbacks_total', { outcome: 'invalid_signature' });

    const forged = [];
    for (let i = 0; i < 8; i++) forged.push(await callback(false));
    const answers = await Promise.all(forged.map(answer));
    expect(answers).toEqual([...Array(3).fill('401 invalid_signature'), ...Array(5).fill('429 too_many_failed_auth')]);
    expect(Number(forged[7].headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // The refused ones were not read or checked: only the first three signatures were.
    expect((await metric(url, 'vg_backend_callbacks_total', { outcome: 'invalid_signature' })) - checked).toBe(3);
    // While it is empty, a signed callback from the address waits too (the backend retries; polling still ends the job).
    expect(await answer(await callback(true))).toBe('429 too_many_failed_auth');
    // API keys count in a bucket of their own: a key this process has never seen, from the same address, passes.
    const newcomer = await stack.createUser('pro');
    expect((await apiClient(url, newcomer.apiKey).list()).status).toBe(200);
  });
});
