import { randomBytes } from 'node:crypto';
import { Client, Connection } from '@temporalio/client';
import { freePort } from '../scripts/lib/ports';
import { newApiKey } from '../src/api/auth';
import { loadConfig } from '../src/config';
import { createDatabase } from '../src/db/client';
import { generateWebhookSecret, signWebhook } from '../src/lib/webhook-signature';
import { startWebhookReceiver, type WebhookReceiver } from './notification-helpers';
import { reconcilerScheduleId } from '../src/reconciler-schedule';
import { apiClient, eventually, testEnv } from './harness';
import { spawnTsProcess, type SpawnedProcess } from './processes';

/**
 * The whole service as real processes at LOG_LEVEL=debug in production mode — simulator, worker, API with its admin
 * listener — driven through every path that handles a secret. Every byte they print is captured; no secret may be in it.
 */
describe('no secret is ever printed or logged', () => {
  const id = randomBytes(4).toString('hex');
  const secrets: Record<string, string> = {
    adminKey: `leak-admin-${randomBytes(20).toString('hex')}`,
    backendSecret: generateWebhookSecret(),
    backendPrevious: generateWebhookSecret(),
    databasePassword: `pw-${randomBytes(12).toString('hex')}`,
    payloadKey: randomBytes(32).toString('base64'),
  };
  const role = `vg_leak_${id}`;
  const processes: SpawnedProcess[] = [];
  const receivers: WebhookReceiver[] = [];
  let env: Record<string, string>;
  let apiUrl: string;
  let adminUrl: string;

  beforeAll(async () => {
    const { databaseUrl, temporalAddress } = testEnv();
    // A role of our own, so the database URL carries a password worth leaking (ignored by a trust-auth server).
    const owner = createDatabase(databaseUrl, { max: 1 });
    await owner.sql.unsafe(`create role ${role} login superuser password '${secrets.databasePassword}'`);
    await owner.close();
    const url = new URL(databaseUrl);
    url.username = role;
    url.password = secrets.databasePassword;
    const [apiPort, adminPort, simulatorPort] = [await freePort(), await freePort(), await freePort()];
    apiUrl = `http://127.0.0.1:${apiPort}`;
    adminUrl = `http://127.0.0.1:${adminPort}`;
    env = {
      NODE_ENV: 'production',
      LOG_LEVEL: 'debug',
      TEMPORAL_ADDRESS: temporalAddress,
      DATABASE_URL: url.toString(),
      ADMIN_API_KEY: secrets.adminKey,
      BACKEND_WEBHOOK_SECRET: secrets.backendSecret,
      BACKEND_WEBHOOK_SECRET_PREVIOUS: secrets.backendPrevious,
      PAYLOAD_KEYS: `leak1:${secrets.payloadKey}`,
      PORT: String(apiPort),
      ADMIN_PORT: String(adminPort),
      PUBLIC_URL: apiUrl,
      SIMULATOR_PORT: String(simulatorPort),
      BACKEND_URL: `http://127.0.0.1:${simulatorPort}`,
      GENERATION_TASK_QUEUE: `generation-leak-${id}`,
      GPU_TASK_QUEUE: `gpu-leak-${id}`,
      METRICS_PORT: '0',
      POLL_INTERVAL_MS: '500',
      HEARTBEAT_TIMEOUT_MS: '3000',
      HEARTBEAT_THROTTLE_MS: '300',
      SIM_P50_MS: '300',
      SIM_P99_MS: '800',
      WEBHOOK_ALLOWED_HOSTS: '127.0.0.0/8,::1,localhost',
      WEBHOOK_RETRY_SCALE: '0.00002',
      WEBHOOK_TIMEOUT_MS: '2000',
    };
    const simulator = spawnTsProcess({ name: 'leak-simulator', script: 'simulator/main.ts', env });
    const api = spawnTsProcess({ name: 'leak-api', script: 'src/api/main.ts', env });
    processes.push(simulator, api);
    await simulator.waitForOutput(/backend simulator listening/);
    await api.waitForOutput(/api listening/);
    const worker = spawnTsProcess({ name: 'leak-worker', script: 'src/worker.ts', env });
    processes.push(worker);
    await worker.waitForOutput(/worker started/, 120_000);
  }, 180_000);

  afterAll(async () => {
    await Promise.all(processes.map((p) => p.stop()));
    for (const receiver of receivers) await receiver.close();
    const connection = await Connection.connect({ address: testEnv().temporalAddress });
    await new Client({ connection }).schedule.getHandle(reconcilerScheduleId(loadConfig(env))).delete().catch(() => undefined);
    await connection.close();
    const owner = createDatabase(testEnv().databaseUrl, { max: 1 });
    await owner.sql.unsafe(`drop role if exists ${role}`);
    await owner.close();
  });

  test('users, keys, webhooks, rotations, callbacks and failed authentications leave no secret in any output', async () => {
    const admin = apiClient(adminUrl, secrets.adminKey);
    const created = await admin.call('POST', '/admin/users', { name: 'leak test', tier: 'pro' });
    expect(created.status).toBe(201);
    const userId: string = created.body.user.id;
    secrets.apiKey = created.body.api_key;
    const user = apiClient(apiUrl, secrets.apiKey);

    // Webhooks: an endpoint whose secret is then rotated (deliveries carry two signatures), a first answer that fails,
    // and a per-request webhook_url signed with the user's request secret.
    const endpointReceiver = await startWebhookReceiver((n) => ({ status: n === 1 ? 500 : 204 }));
    const requestReceiver = await startWebhookReceiver();
    receivers.push(endpointReceiver, requestReceiver);
    const endpoint = await user.call('POST', '/v1/webhook-endpoints', { url: endpointReceiver.url });
    expect(endpoint.status).toBe(201);
    secrets.endpointSecret = endpoint.body.secret;
    const rotatedEndpoint = await user.call('POST', `/v1/webhook-endpoints/${endpoint.body.id}/rotate-secret`, { overlap_seconds: 3600 });
    secrets.endpointRotated = rotatedEndpoint.body.secret;
    secrets.requestSecret = (await user.call('GET', '/v1/webhook-secret')).body.secret;

    const job = await user.submit({ prompt: 'a lantern in the fog', webhook_url: requestReceiver.url }, `leak-${id}`);
    expect(job.status).toBe(202);
    expect(await user.waitForTerminal(job.body.id)).toMatchObject({ status: 'succeeded' });
    await endpointReceiver.waitFor((all) => all.some((w) => w.status === 204));
    await requestReceiver.waitFor((all) => all.length > 0);

    // Failed authentications: unknown keys, a near miss of a real one, other schemes, a wrong admin key.
    secrets.unknownKey = newApiKey();
    secrets.nearMiss = `${secrets.apiKey.slice(0, -1)}${secrets.apiKey.endsWith('A') ? 'B' : 'A'}`;
    secrets.basicPassword = `basic-${randomBytes(12).toString('hex')}`;
    secrets.wrongAdminKey = `wrong-admin-${randomBytes(16).toString('hex')}`;
    expect((await apiClient(apiUrl, secrets.unknownKey).call('GET', '/v1/generations')).status).toBe(401);
    expect((await apiClient(apiUrl, secrets.nearMiss).call('GET', '/v1/usage')).status).toBe(401);
    const basic = await fetch(`${apiUrl}/v1/usage`, { headers: { authorization: `Basic ${Buffer.from(`user:${secrets.basicPassword}`).toString('base64')}` } });
    expect(basic.status).toBe(401);
    expect((await apiClient(adminUrl, secrets.wrongAdminKey).call('POST', '/admin/users', { name: 'x', tier: 'free' })).status).toBe(401);
    expect((await apiClient(apiUrl, secrets.adminKey).call('POST', '/admin/users', { name: 'x', tier: 'free' })).status).toBe(404);

    // Backend callbacks signed with the previous secret and with one we never had.
    secrets.strangerSecret = generateWebhookSecret();
    const callback = JSON.stringify({ event_id: 'evt_leak', type: 'job.succeeded', sequence: 2, job: { id: 'job_leak', client_key: 'gen_leak:run:1:attempt:1', status: 'succeeded' } });
    for (const [secret, status] of [[secrets.backendPrevious, 200], [secrets.strangerSecret, 401]] as const) {
      const res = await fetch(`${apiUrl}/internal/backend/callbacks`, { method: 'POST', headers: { ...signWebhook(secret, 'msg_leak', callback), 'content-type': 'application/json' }, body: callback });
      expect(res.status).toBe(status);
    }

    // Key rotation and revocation.
    const rotated = await user.call('POST', '/v1/api-keys/rotate', {});
    expect(rotated.status).toBe(201);
    secrets.rotatedKey = rotated.body.api_key;
    expect((await user.call('GET', '/v1/usage')).status).toBe(401);
    expect((await admin.call('GET', `/admin/users/${userId}/api-keys`)).status).toBe(200);
    expect((await admin.call('POST', `/admin/users/${userId}/api-keys/revoke`)).status).toBe(200);
    const issued = await admin.call('POST', `/admin/users/${userId}/api-keys`);
    secrets.issuedKey = issued.body.api_key;
    expect((await apiClient(apiUrl, secrets.issuedKey).call('GET', '/v1/api-keys')).status).toBe(200);

    // A process that cannot reach its database names the database, not the password.
    const unreachable = new URL(env.DATABASE_URL);
    unreachable.port = String(await freePort());
    const failing = spawnTsProcess({ name: 'leak-api-no-database', script: 'src/api/main.ts', env: { ...env, DATABASE_URL: unreachable.toString(), PORT: '0', ADMIN_PORT: '0' } });
    expect((await failing.exited).code).toBe(1);
    processes.push(failing);

    const [simulator, api, worker] = processes;
    await eventually(async () => (api.output().includes('"route":"/v1/api-keys/rotate"') ? true : undefined), { what: 'the rotation in the request log' });
    await Promise.all(processes.map((p) => p.stop()));

    // The paths ran and were logged at debug level: otherwise an empty log would pass.
    expect(api.output()).toMatch(/"msg":"callback signalled"/);
    expect(api.output()).toMatch(/"status":401/);
    expect(worker.output()).toMatch(/"msg":"backend job ended"/);
    expect(simulator.output()).toMatch(/"msg":"backend simulator listening"/);
    expect(failing.output()).toMatch(/ECONNREFUSED|connect/);

    const withoutPrefix = Object.values(secrets).filter((s) => s.startsWith('whsec_')).map((s) => s.slice('whsec_'.length));
    const basicCredential = Buffer.from(`user:${secrets.basicPassword}`).toString('base64');
    const leaks = processes.flatMap((p) =>
      [...Object.entries(secrets), ...withoutPrefix.map((s) => ['whsec_ key part', s] as const), ['basic credential', basicCredential] as const]
        .filter(([, secret]) => p.output().includes(secret))
        .map(([name]) => `${name} in ${p.name}'s output (${p.logFile})`),
    );
    expect(leaks).toEqual([]);
  }, 240_000);
});
