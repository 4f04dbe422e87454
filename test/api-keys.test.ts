import { startApi } from '../src/api/main';
import { KEPT_REVOKED_KEYS, MAX_LIVE_KEYS } from '../src/api/api-keys';
import { AUTH_CACHE_MS } from '../src/api/auth';
import { createLogger } from '../src/lib/logger';
import { apiClient, eventually, startStack, testEnv, type Stack } from './harness';

/** API keys through the real API: an operator lists, issues and revokes them; a user rotates their own. */
describe('API keys', () => {
  let stack: Stack;
  let admin: ReturnType<typeof apiClient>;
  beforeAll(async () => {
    stack = await startStack();
    admin = apiClient(stack.adminUrl, stack.adminApiKey);
  });
  afterAll(async () => {
    await stack?.close();
  });

  const statusWith = async (apiKey: string, baseUrl = stack.apiUrl) => (await apiClient(baseUrl, apiKey).call('GET', '/v1/usage')).status;

  test("an operator lists a user's keys by prefix and dates, never the keys themselves", async () => {
    const { userId, apiKey } = await stack.createUser('free');
    const listed = await admin.call('GET', `/admin/users/${userId}/api-keys`);
    expect(listed.status).toBe(200);
    expect(listed.body.data).toEqual([
      { id: expect.stringMatching(/^key_/), object: 'api_key', user_id: userId, prefix: apiKey.slice(0, 8), status: 'active', created_at: expect.any(String), revoked_at: null },
    ]);
    expect(listed.text).not.toContain(apiKey);
    expect((await admin.call('GET', '/admin/users/usr_nobody/api-keys')).status).toBe(404);
    expect((await apiClient(stack.adminUrl, apiKey).call('GET', `/admin/users/${userId}/api-keys`)).status).toBe(401);
  });

  test('a user rotates their key: the new one is shown once and works, the one used gets 401 at once', async () => {
    const { apiKey: first } = await stack.createUser('pro');
    expect(await statusWith(first)).toBe(200); // now in this process's auth cache
    const rotated = await apiClient(stack.apiUrl, first).call('POST', '/v1/api-keys/rotate', {});
    expect(rotated.status).toBe(201);
    const second: string = rotated.body.api_key;
    expect(second).toMatch(/^vg_/);
    expect(rotated.body).toMatchObject({ object: 'api_key_rotation', key: { status: 'active', prefix: second.slice(0, 8) }, previous_key: { status: 'revoked', prefix: first.slice(0, 8) } });

    expect(await statusWith(first)).toBe(401);
    expect(await statusWith(second)).toBe(200);
    const mine = await apiClient(stack.apiUrl, second).call('GET', '/v1/api-keys');
    expect(mine.body.data.map((k: { prefix: string; status: string }) => [k.prefix, k.status])).toEqual([
      [second.slice(0, 8), 'active'],
      [first.slice(0, 8), 'revoked'],
    ]);
    expect(mine.text).not.toContain(second);
    expect((await apiClient(stack.apiUrl, first).call('POST', '/v1/api-keys/rotate', {})).status).toBe(401);
  });

  test('with a grace period the old key works until it ends, cannot rotate again, and an operator can end it early', async () => {
    const { userId, apiKey: old } = await stack.createUser('pro');
    const user = apiClient(stack.apiUrl, old);
    for (const body of [{ grace_seconds: 86_401 }, { grace_seconds: -1 }, { grace_seconds: 1.5 }, { grace: 10 }]) {
      expect({ body, status: (await user.call('POST', '/v1/api-keys/rotate', body)).status }).toEqual({ body, status: 400 });
    }
    const rotated = await user.call('POST', '/v1/api-keys/rotate', { grace_seconds: 3600 });
    expect(rotated.status).toBe(201);
    expect(rotated.body.previous_key).toMatchObject({ status: 'expiring', revoked_at: expect.any(String) });
    expect(Date.parse(rotated.body.previous_key.revoked_at) - Date.now()).toBeGreaterThan(3000 * 1000);
    expect(await statusWith(old)).toBe(200);
    expect(await statusWith(rotated.body.api_key)).toBe(200);
    // A leaked key must not be able to mint a lasting one.
    const again = await user.call('POST', '/v1/api-keys/rotate', {});
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('api_key_retiring');

    const revoked = await admin.call('POST', `/admin/users/${userId}/api-keys/${rotated.body.previous_key.id}/revoke`);
    expect(revoked.status).toBe(200);
    expect(revoked.body).toMatchObject({ id: rotated.body.previous_key.id, status: 'revoked' });
    expect(await statusWith(old)).toBe(401);
    expect(await statusWith(rotated.body.api_key)).toBe(200);
    // Idempotent: a second revocation keeps the first one's time.
    const twice = await admin.call('POST', `/admin/users/${userId}/api-keys/${rotated.body.previous_key.id}/revoke`);
    expect(twice.body.revoked_at).toBe(revoked.body.revoked_at);

    // A short grace period runs out by itself.
    const short = await apiClient(stack.apiUrl, rotated.body.api_key).call('POST', '/v1/api-keys/rotate', { grace_seconds: 1 });
    expect(short.status).toBe(201);
    await eventually(async () => ((await statusWith(rotated.body.api_key)) === 401 ? true : undefined), { timeoutMs: 15_000, what: 'the grace period to end' });
    expect(await statusWith(short.body.api_key)).toBe(200);
  });

  test("an operator revokes all of a user's keys: 401 at once on this API, within the cache's lifetime on another; a new key works", async () => {
    const { userId, apiKey } = await stack.createUser('pro');
    const other = await startApi({ config: { ...stack.config, api: { ...stack.config.api, port: 0 } }, databaseUrl: testEnv().databaseUrl, logger: createLogger('other-api', 'warn'), adminApiKey: stack.adminApiKey });
    try {
      expect(await statusWith(apiKey)).toBe(200);
      expect(await statusWith(apiKey, other.url)).toBe(200); // remembered by the other process too
      const revokedAt = Date.now();
      const revoked = await admin.call('POST', `/admin/users/${userId}/api-keys/revoke`);
      expect(revoked.status).toBe(200);
      expect(revoked.body.data).toEqual([expect.objectContaining({ status: 'revoked', revoked_at: expect.any(String) })]);
      expect(await statusWith(apiKey)).toBe(401);
      const res = await apiClient(stack.apiUrl, apiKey).call('GET', '/v1/generations');
      expect(res.body).toEqual({ error: { code: 'unauthorized', message: expect.any(String) } });
      await eventually(async () => ((await statusWith(apiKey, other.url)) === 401 ? true : undefined), { timeoutMs: AUTH_CACHE_MS + 10_000, what: 'the other API to refuse the key' });
      process.stdout.write(`revoked key refused by the other API process after ${Date.now() - revokedAt} ms (cache ${AUTH_CACHE_MS} ms)\n`);

      const issued = await admin.call('POST', `/admin/users/${userId}/api-keys`);
      expect(issued.status).toBe(201);
      expect(issued.body).toMatchObject({ object: 'issued_api_key', key: { status: 'active', user_id: userId } });
      expect(await statusWith(issued.body.api_key)).toBe(200);
      expect(await statusWith(issued.body.api_key, other.url)).toBe(200);
    } finally {
      await other.close({ graceMs: 0 });
    }
    expect((await admin.call('POST', '/admin/users/usr_nobody/api-keys/revoke')).status).toBe(404);
    expect((await admin.call('POST', '/admin/users/usr_nobody/api-keys')).status).toBe(404);
    const stranger = await stack.createUser('free');
    const [strangersKey] = (await admin.call('GET', `/admin/users/${stranger.userId}/api-keys`)).body.data;
    expect((await admin.call('POST', `/admin/users/${userId}/api-keys/${strangersKey.id}/revoke`)).status).toBe(404);
    expect(await statusWith(stranger.apiKey)).toBe(200);
  });

  test("a user's keys stay bounded: rotations keep the newest revoked keys only, and at most a few keys work at once", async () => {
    const { userId, apiKey } = await stack.createUser('free');
    let current = apiKey;
    for (let i = 0; i < KEPT_REVOKED_KEYS + 5; i++) {
      const rotated = await apiClient(stack.apiUrl, current).call('POST', '/v1/api-keys/rotate', {});
      expect(rotated.status).toBe(201);
      current = rotated.body.api_key;
    }
    const keys = (await admin.call('GET', `/admin/users/${userId}/api-keys`)).body.data as Array<{ status: string }>;
    expect(keys.filter((k) => k.status === 'revoked')).toHaveLength(KEPT_REVOKED_KEYS);
    expect(keys.filter((k) => k.status === 'active')).toHaveLength(1);

    for (let i = 1; i < MAX_LIVE_KEYS; i++) expect((await admin.call('POST', `/admin/users/${userId}/api-keys`)).status).toBe(201);
    const tooMany = await admin.call('POST', `/admin/users/${userId}/api-keys`);
    expect(tooMany.status).toBe(409);
    expect(tooMany.body.error.code).toBe('too_many_api_keys');
    // A rotation that would keep the old key working is refused too, and leaves the key as it was.
    const graceful = await apiClient(stack.apiUrl, current).call('POST', '/v1/api-keys/rotate', { grace_seconds: 60 });
    expect(graceful.status).toBe(409);
    expect(await statusWith(current)).toBe(200);
    expect((await apiClient(stack.apiUrl, current).call('POST', '/v1/api-keys/rotate', {})).status).toBe(201);
  });
});
