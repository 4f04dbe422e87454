import { apiClient, eventually, startStack, type Stack } from './harness';

/**
 * Prefer: wait=N on POST /v1/generations and GET /v1/generations/:id against the real service: the answer waits for
 * the job's end, woken by the change feed, up to N seconds; waits are capped per user and per process, and end when
 * their client goes away.
 */
describe('Prefer: wait', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({ env: { PREFER_WAIT_MAX_PER_USER: '1', PREFER_WAIT_MAX: '2' } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  type Api = ReturnType<typeof apiClient> & { key: string };
  const newUser = async (): Promise<Api> => {
    const { apiKey } = await stack.createUser('pro');
    return Object.assign(apiClient(stack.apiUrl, apiKey), { key: apiKey });
  };
  const small = (prompt: string) => ({ prompt, duration_seconds: 1, resolution: '480p' });
  const prefer = (value: string) => ({ prefer: value });
  const getWaiting = (api: Api, id: string, value: string, signal?: AbortSignal) =>
    signal
      ? fetch(`${stack.apiUrl}/v1/generations/${id}`, { headers: { authorization: `Bearer ${api.key}`, prefer: value }, signal })
      : api.call('GET', `/v1/generations/${id}`, undefined, prefer(value));
  /** A job that runs until cancelled. */
  const hanging = async (api: Api) => {
    const res = await api.submit(small('a clock that never stops [hang]'));
    expect(res.status).toBe(202);
    return res.body.id as string;
  };
  /**
   * Whether the user holds a wait slot: a waiting submit of an empty body is refused too_many_waits when they do, and
   * otherwise takes the slot and gives it back in the same tick when the body is refused (400): the probe never holds one.
   */
  const holding = async (api: Api) => {
    const res = await api.call('POST', '/v1/generations', {}, prefer('wait=1'));
    if (res.status === 429 && res.body.error.code === 'too_many_waits') return true;
    if (res.status === 400) return false;
    throw new Error(`probe answered ${res.status} ${res.text}`);
  };
  const holdsWait = (api: Api) => eventually(async () => ((await holding(api)) ? true : undefined), { timeoutMs: 10_000, what: 'the wait to be open' });

  test('a submit that ends within N seconds is answered 200 with the ended job and Preference-Applied', async () => {
    const api = await newUser();
    const began = Date.now();
    const res = await api.call('POST', '/v1/generations', small('a short one'), prefer('wait=30'));
    // Woken by the ending, not by the deadline (the job takes about a second; a generous bound, not a race).
    expect(Date.now() - began).toBeLessThan(20_000);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('succeeded');
    expect(res.body.video_url).toEqual(expect.any(String));
    expect(res.headers.get('preference-applied')).toBe('wait=30');
    expect(res.headers.get('vary')).toMatch(/prefer/i);
    expect(res.headers.get('location')).toBe(`/v1/generations/${res.body.id}`);
    expect(res.headers.get('ratelimit-policy')).toContain('"burst"');

    // A read of an ended job answers at once, the preference applied; a replay of the keyed submit waits alike.
    const read = await getWaiting(api, res.body.id, 'respond-async, wait=5');
    expect(read.status).toBe(200);
    expect(read.body.status).toBe('succeeded');
    expect(read.headers.get('preference-applied')).toBe('wait=5');
  });

  test('a read is woken by the job ending (a cancel) long before N seconds', async () => {
    const api = await newUser();
    const id = await hanging(api);
    const began = Date.now();
    const waiting = getWaiting(api, id, 'wait=60');
    await holdsWait(api);
    const cancel = await api.call('POST', `/v1/generations/${id}/cancel`);
    expect([200, 202]).toContain(cancel.status);
    const res = (await waiting) as Awaited<ReturnType<Api['call']>>;
    // Woken by the cancel's change-feed event, not by the 60 s deadline.
    expect(Date.now() - began).toBeLessThan(30_000);
    expect(res.status).toBe(200);
    expect(res.body.status).toBe('canceled');
    expect(res.headers.get('preference-applied')).toBe('wait=60');
  });

  test('a job still under way after N seconds is answered as it is then', async () => {
    const api = await newUser();
    const began = Date.now();
    const submitted = await api.call('POST', '/v1/generations', small('a clock that never stops [hang]'), prefer('wait=1'));
    expect(submitted.status).toBe(202);
    expect(Date.now() - began).toBeGreaterThanOrEqual(1_000);
    expect(['queued', 'running']).toContain(submitted.body.status);
    expect(submitted.headers.get('preference-applied')).toBe('wait=1');

    const readAt = Date.now();
    const read = await getWaiting(api, submitted.body.id, 'wait=1');
    expect(read.status).toBe(200);
    expect(Date.now() - readAt).toBeGreaterThanOrEqual(1_000);
    expect(['queued', 'running']).toContain(read.body.status);
    expect(read.headers.get('preference-applied')).toBe('wait=1');
    await api.call('POST', `/v1/generations/${submitted.body.id}/cancel`);
  });

  test('a wait it cannot honour is ignored (RFC 7240): answered at once, no Preference-Applied', async () => {
    const api = await newUser();
    const id = await hanging(api);
    for (const value of ['wait=0', 'wait=61', 'wait=soon', 'wait=1.5', 'respond-async']) {
      const read = await getWaiting(api, id, value);
      expect({ value, status: read.status, applied: read.headers.get('preference-applied') }).toEqual({ value, status: 200, applied: null });
    }
    const submitted = await api.call('POST', '/v1/generations', small('no wait'), prefer('wait=3600'));
    expect(submitted.status).toBe(202);
    expect(submitted.body.status).toBe('queued');
    expect(submitted.headers.get('preference-applied')).toBeNull();
    await api.call('POST', `/v1/generations/${id}/cancel`);
  });

  test('waits are capped per user and per process (429), and a refused submit submits nothing', async () => {
    const [a, b, c] = [await newUser(), await newUser(), await newUser()];
    const [jobA, jobB, jobC] = [await hanging(a), await hanging(b), await hanging(c)];
    const waitA = getWaiting(a, jobA, 'wait=60');
    await holdsWait(a);

    const before = (await a.list()).body.data.length;
    const refusedSubmit = await a.call('POST', '/v1/generations', small('one more'), prefer('wait=5'));
    expect(refusedSubmit.status).toBe(429);
    expect(refusedSubmit.body.error.code).toBe('too_many_waits');
    expect(Number(refusedSubmit.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect((await a.list()).body.data.length).toBe(before);

    const waitB = getWaiting(b, jobB, 'wait=60');
    await holdsWait(b);
    // Two waits open in the process: a third user's is refused.
    const full = await getWaiting(c, jobC, 'wait=5');
    expect(full.status).toBe(429);
    expect(full.body.error.code).toBe('wait_capacity_reached');
    await c.call('POST', `/v1/generations/${jobC}/cancel`);

    await a.call('POST', `/v1/generations/${jobA}/cancel`);
    await b.call('POST', `/v1/generations/${jobB}/cancel`);
    expect(((await waitA) as Awaited<ReturnType<Api['call']>>).body.status).toBe('canceled');
    expect(((await waitB) as Awaited<ReturnType<Api['call']>>).body.status).toBe('canceled');
  });

  test('a client that goes away ends its wait at once: its slot is free again long before N seconds', async () => {
    const api = await newUser();
    const id = await hanging(api);
    const controller = new AbortController();
    const waiting = getWaiting(api, id, 'wait=60', controller.signal).catch((err: unknown) => err);
    await holdsWait(api);
    controller.abort();
    // The client's fetch ends with its abort (a DOMException, from another realm than jest's Error).
    expect((await waiting) as { name?: string }).toMatchObject({ name: 'AbortError' });
    // Freed by the close, not by the 60 s deadline: the user may wait again well within it.
    await eventually(async () => ((await holding(api)) ? undefined : true), { timeoutMs: 10_000, what: 'the aborted wait to free its slot' });
    const next = await getWaiting(api, id, 'wait=1');
    expect(next.status).toBe(200);
    expect(next.headers.get('preference-applied')).toBe('wait=1');
    await api.call('POST', `/v1/generations/${id}/cancel`);
  });
});
