import { randomBytes } from 'node:crypto';
import { ConfigError, configuredSecrets, loadConfig } from './config';
import { generateWebhookSecret, isWebhookSecret } from './lib/webhook-signature';
import { newPayloadKey } from './lib/payload-codec';

const production = {
  NODE_ENV: 'production',
  ADMIN_API_KEY: `admin-${randomBytes(16).toString('hex')}`,
  BACKEND_WEBHOOK_SECRET: generateWebhookSecret(),
  PAYLOAD_KEYS: newPayloadKey('k1'),
};
const problemOf = (env: Record<string, string>) => {
  try {
    loadConfig(env);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  return 'accepted';
};

describe('the secret settings', () => {
  test('a whsec_ secret is the canonical base64 of 24 to 64 bytes', () => {
    const whsec = (bytes: number) => `whsec_${randomBytes(bytes).toString('base64')}`;
    expect([24, 32, 64].map((n) => isWebhookSecret(whsec(n)))).toEqual([true, true, true]);
    expect([23, 65].map((n) => isWebhookSecret(whsec(n)))).toEqual([false, false]);
    const key = randomBytes(24).toString('base64');
    for (const bad of [key, `whsec_${key.slice(0, -1)}`, `whsec_${key}=`, `whsec_${key.replace(/.$/, '-')}`, `whsec_ ${key}`, 'whsec_']) expect({ bad, ok: isWebhookSecret(bad) }).toEqual({ bad, ok: false });
  });

  test('a rotation takes the new secret as current and the old one as previous, never the same one twice', () => {
    const previous = generateWebhookSecret();
    expect(loadConfig({ ...production, BACKEND_WEBHOOK_SECRET_PREVIOUS: previous }).backend.webhookSecrets).toEqual([production.BACKEND_WEBHOOK_SECRET, previous]);
    expect(loadConfig(production).backend.webhookSecrets).toEqual([production.BACKEND_WEBHOOK_SECRET]);
    expect(problemOf({ ...production, BACKEND_WEBHOOK_SECRET_PREVIOUS: production.BACKEND_WEBHOOK_SECRET })).toMatch(/must differ/);
    expect(problemOf({ NODE_ENV: 'development', BACKEND_WEBHOOK_SECRET_PREVIOUS: previous })).toMatch(/only together with BACKEND_WEBHOOK_SECRET/);
  });

  test('an empty value counts as unset, and so fails closed outside development and test', () => {
    expect(problemOf({ ...production, ADMIN_API_KEY: '' })).toMatch(/ADMIN_API_KEY must be set when NODE_ENV=production/);
    expect(loadConfig({ NODE_ENV: 'test', ADMIN_API_KEY: '', BACKEND_WEBHOOK_SECRET: '' }).api.adminApiKey).toBeUndefined();
    expect(problemOf({ ...production, ADMIN_API_KEY: `${'k'.repeat(31)}` })).toMatch(/ADMIN_API_KEY: must be at least 32 characters/);
    expect(problemOf({ ...production, ADMIN_API_KEY: `${'k'.repeat(31)}"` })).toMatch(/without spaces, quotes or backslashes/);
    expect(problemOf({ ...production, NODE_ENV: 'prod uction' })).toMatch(/NODE_ENV/);
    expect(problemOf({ ...production, PORT: '3000', ADMIN_PORT: '3000' })).toMatch(/ADMIN_PORT: must differ from PORT/);
  });

  test('the log scrubber is given every configured secret, the database password included', () => {
    const previous = generateWebhookSecret();
    const config = loadConfig({ ...production, BACKEND_WEBHOOK_SECRET_PREVIOUS: previous, DATABASE_URL: 'postgres://app:p%40ss-word-1234@db:5432/videogen' });
    const payloadKey = production.PAYLOAD_KEYS.split(':')[1];
    expect(configuredSecrets(config).sort()).toEqual([production.ADMIN_API_KEY, production.BACKEND_WEBHOOK_SECRET, previous, payloadKey, 'p%40ss-word-1234', 'p@ss-word-1234'].sort());
  });
});

describe('empty values', () => {
  test('count as unset for every setting: a number is its default, not 0, and an optional one stays off', () => {
    const config = loadConfig({ PORT: '', ADMIN_PORT: '', GPU_SLOTS: '', DATABASE_URL: '', TEMPORAL_ADDRESS: '', PUBLIC_URL: '', BACKEND_URL: '' });
    expect(config.api.port).toBe(3000);
    expect(config.api.adminListener).toBeUndefined();
    expect(config.worker.gpuSlots).toBe(4);
    expect(config.database.url).toBeUndefined();
    expect(config.temporal.external).toBe(false);
    expect(config.api.publicUrl).toBe('http://127.0.0.1:3000');
  });
});

describe('retention settings', () => {
  test('default to windows that keep a reused Idempotency-Key safe', () => {
    const { retention, temporal } = loadConfig({});
    expect(retention).toMatchObject({ jobsDays: 30, notificationsDays: 30, deliveriesDays: 30, ledgerDays: 400, apiKeysDays: 30, batchSize: 1000 });
    expect(temporal.retentionDays).toBe(7);
  });

  test.each([
    [{ TEMPORAL_RETENTION_DAYS: '30' }, /TEMPORAL_RETENTION_DAYS must be less than RETENTION_JOBS_DAYS/],
    [{ RETENTION_NOTIFICATIONS_DAYS: '31' }, /RETENTION_NOTIFICATIONS_DAYS may not exceed RETENTION_JOBS_DAYS/],
    [{ RETENTION_DELIVERIES_DAYS: '45' }, /RETENTION_DELIVERIES_DAYS may not exceed RETENTION_JOBS_DAYS/],
    [{ RETENTION_LEDGER_DAYS: '20' }, /RETENTION_LEDGER_DAYS may not be less than RETENTION_JOBS_DAYS/],
    [{ RETENTION_JOBS_DAYS: '0' }, /RETENTION_JOBS_DAYS/],
  ])('refuses %j', (env, message) => {
    expect(() => loadConfig(env)).toThrow(message);
  });
});

describe('BACKENDS', () => {
  const replicate = { name: 'replicate-wan', kind: 'replicate', base_url: 'https://api.replicate.com', credentials_env: 'REPLICATE_API_TOKEN', capacity: 3, model: 'wan-video/wan-2.2-t2v-fast' };

  test('unset, the one backend is the simulator at BACKEND_URL with the pool of GPU_SLOTS', () => {
    const config = loadConfig({ BACKEND_URL: 'http://sim.test:4000', GPU_SLOTS: '6' });
    expect(config.backend.backends).toEqual([
      { name: 'simulator', kind: 'simulator', base_url: 'http://sim.test:4000', capacity: 6, cost_factor: 1, renders: { image_input: true, video_input: true } },
    ]);
    expect(config.dispatch.initialCapacity).toBe(6);
  });

  test('a list is read with each key from the variable it names; the first backend seeds the pool; the keys are secrets', () => {
    const config = loadConfig({
      BACKENDS: JSON.stringify([{ ...replicate, cost_factor: 1.5, renders: { resolutions: ['720p'], durations_seconds: [5], image_input: true } }]),
      REPLICATE_API_TOKEN: 'r8_secret_token_value',
    });
    expect(config.backend.backends[0]).toMatchObject({ kind: 'replicate', credentials: 'r8_secret_token_value', cost_factor: 1.5, renders: { resolutions: ['720p'], image_input: true } });
    expect(config.dispatch.initialCapacity).toBe(3);
    expect(configuredSecrets(config)).toContain('r8_secret_token_value');
  });

  test('a listed simulator renders images and remixes unless told otherwise; a provider renders neither unless told', () => {
    const sim = { name: 'sim', kind: 'simulator', base_url: 'http://sim.test:4000', capacity: 2 };
    const config = loadConfig({
      BACKENDS: JSON.stringify([sim, { ...sim, name: 'sim-t2v', renders: { image_input: false } }, replicate]),
      REPLICATE_API_TOKEN: 'r8_secret_token_value',
    });
    expect(config.backend.backends.map((b) => b.renders)).toEqual([
      { image_input: true, video_input: true },
      { image_input: false, video_input: true },
      { image_input: false, video_input: false },
    ]);
  });

  test('a bad list stops the process with the setting and the field named, never a key', () => {
    expect(problemOf({ BACKENDS: '[{' })).toMatch(/^invalid configuration: BACKENDS: must be a JSON array of backends/);
    expect(problemOf({ BACKENDS: '[]' })).toMatch(/BACKENDS: must list at least one backend/);
    expect(problemOf({ BACKENDS: JSON.stringify([{ ...replicate, kind: 'runway' }]) })).toMatch(/BACKENDS: \[0\]\.kind: /);
    expect(problemOf({ BACKENDS: JSON.stringify([{ ...replicate, capacity: -1 }]), REPLICATE_API_TOKEN: 'x' })).toMatch(/BACKENDS: \[0\]\.capacity: /);
    expect(problemOf({ BACKENDS: JSON.stringify([{ ...replicate, renders: { resolutions: ['4k'] } }]), REPLICATE_API_TOKEN: 'x' })).toMatch(/BACKENDS: \[0\]\.renders\.resolutions\[0\]: /);
    expect(problemOf({ BACKENDS: JSON.stringify([replicate, replicate]), REPLICATE_API_TOKEN: 'x' })).toMatch(/\[1\]\.name: "replicate-wan" is listed twice/);
    const { credentials_env: _omitted, ...keyless } = replicate;
    expect(problemOf({ BACKENDS: JSON.stringify([keyless]) })).toMatch(/\[0\]\.credentials_env: a replicate backend needs/);
    expect(problemOf({ BACKENDS: JSON.stringify([replicate]) })).toBe('invalid configuration: BACKENDS[0].credentials_env: REPLICATE_API_TOKEN is not set');
    expect(problemOf({ BACKENDS: JSON.stringify([replicate]), REPLICATE_API_TOKEN: 'x', GPU_CAPACITY_FROM_BACKEND: 'true' })).toMatch(/GPU_CAPACITY_FROM_BACKEND: only the simulator/);
  });
});
