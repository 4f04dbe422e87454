import { startApi } from '../src/api/main';
import { loadConfig } from '../src/config';
import { createLogger } from '../src/lib/logger';
import { apiClient, startStack, testEnv, type Stack } from './harness';

/** ADMIN_PORT: admin routes, /metrics and readiness details on an internal listener, away from the public port. */
describe('the admin listener', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(async () => {
    await stack?.close();
  });

  const apiWith = (env: Record<string, string>) =>
    startApi({ config: loadConfig({ ...stack.env, PORT: '0', ...env }), databaseUrl: testEnv().databaseUrl, logger: createLogger('admin-listener-api', 'warn'), adminApiKey: stack.adminApiKey });
  const newUser = { name: 'listener test', tier: 'free' };

  test('unset: admin routes, /metrics and readiness details share the public port, as they always have', async () => {
    expect(stack.adminUrl).toBe(stack.apiUrl);
    const admin = apiClient(stack.apiUrl, stack.adminApiKey);
    expect((await admin.call('POST', '/admin/users', newUser)).status).toBe(201);
    expect((await admin.call('GET', '/metrics')).text).toContain('vg_submissions_total');
    expect((await admin.call('GET', '/readyz')).body).toEqual({ status: 'ready', checks: { postgres: 'ok', temporal: 'ok' } });
  });

  test('set: they are served only on the internal listener; the public port answers 404 and readiness without details', async () => {
    const api = await apiWith({ ADMIN_PORT: '0' });
    try {
      expect(api.adminUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      expect(api.adminUrl).not.toBe(api.url);
      const outside = apiClient(api.url, stack.adminApiKey);
      for (const [method, path] of [['POST', '/admin/users'], ['GET', '/admin/capacity'], ['GET', '/admin/generations/stuck'], ['GET', '/admin/users/usr_x/api-keys'], ['GET', '/metrics']]) {
        const res = await outside.call(method, path, method === 'POST' ? newUser : undefined);
        expect({ path, status: res.status, code: res.body?.error?.code }).toEqual({ path, status: 404, code: 'not_found' });
      }
      expect((await outside.call('GET', '/readyz')).body).toEqual({ status: 'ready' });
      expect((await outside.call('GET', '/healthz')).status).toBe(200);
      // The public API itself is unchanged.
      const { apiKey } = await stack.createUser('free');
      expect((await apiClient(api.url, apiKey).call('GET', '/v1/usage')).status).toBe(200);

      const inside = apiClient(api.adminUrl, stack.adminApiKey);
      expect((await inside.call('POST', '/admin/users', newUser)).status).toBe(201);
      expect((await apiClient(api.adminUrl, 'not-the-admin-key').call('POST', '/admin/users', newUser)).status).toBe(401);
      expect((await inside.call('GET', '/metrics')).text).toContain('vg_submissions_total');
      expect((await inside.call('GET', '/readyz')).body).toEqual({ status: 'ready', checks: { postgres: 'ok', temporal: 'ok' } });
      // Clients' routes are not on the internal listener.
      expect((await apiClient(api.adminUrl, apiKey).call('GET', '/v1/usage')).status).toBe(404);
    } finally {
      await api.close({ graceMs: 0 });
    }
  });

  test('ADMIN_HOST is the only interface the admin listener answers on', async () => {
    const api = await apiWith({ ADMIN_PORT: '0', ADMIN_HOST: '127.0.0.2' });
    try {
      expect(api.adminUrl).toBe(`http://127.0.0.2:${api.adminPort}`);
      expect((await fetch(`${api.adminUrl}/readyz`)).status).toBe(200);
      await expect(fetch(`http://127.0.0.1:${api.adminPort}/readyz`)).rejects.toThrow();
    } finally {
      await api.close({ graceMs: 0 });
    }
  });
});
