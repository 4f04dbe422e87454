import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../scripts/lib/ports';
import { EXIT_CONFIG } from '../src/run-process';
import { generateWebhookSecret } from '../src/lib/webhook-signature';
import { testEnv } from './harness';
import { spawnTsProcess } from './processes';

/** The real entry points, spawned with settings they must refuse: each says why in one line and exits non-zero. */
const ENTRIES = { api: 'src/api/main.ts', worker: 'src/worker.ts', simulator: 'simulator/main.ts' } as const;
type Entry = keyof typeof ENTRIES;

async function refusal(entry: Entry, env: Record<string, string>) {
  const child = spawnTsProcess({ name: `fail-closed-${entry}`, script: ENTRIES[entry], env });
  const exit = await child.exited;
  return { entry, code: exit.code, output: child.output() };
}

const refusals = (env: Record<string, string>) => Promise.all((Object.keys(ENTRIES) as Entry[]).map((entry) => refusal(entry, env)));

function expectOneLine(result: { entry: Entry; code: number | null; output: string }, ...mentions: RegExp[]) {
  expect({ entry: result.entry, code: result.code }).toEqual({ entry: result.entry, code: EXIT_CONFIG });
  const lines = result.output.trim().split('\n');
  expect({ entry: result.entry, lines }).toEqual({ entry: result.entry, lines: [expect.stringMatching(new RegExp(`^${result.entry}: invalid configuration: `))] });
  for (const mention of mentions) expect(lines[0]).toMatch(mention);
}

describe('outside development and test, the API, the worker and the simulator fail closed', () => {
  test('without BACKEND_WEBHOOK_SECRET and ADMIN_API_KEY, each refuses to start, naming both, in one line', async () => {
    for (const result of await refusals({ NODE_ENV: 'production' })) expectOneLine(result, /BACKEND_WEBHOOK_SECRET and ADMIN_API_KEY must be set when NODE_ENV=production/);
  });

  test('any NODE_ENV other than development and test counts, and one missing setting is named alone', async () => {
    for (const result of await refusals({ NODE_ENV: 'staging', BACKEND_WEBHOOK_SECRET: generateWebhookSecret() })) {
      expectOneLine(result, /ADMIN_API_KEY must be set when NODE_ENV=staging/);
      expect(result.output).not.toContain('BACKEND_WEBHOOK_SECRET');
    }
  });

  test('a too short or malformed secret is refused, and the message never repeats it', async () => {
    const weak = { BACKEND_WEBHOOK_SECRET: 'whsec_c2hvcnQtc2VjcmV0', ADMIN_API_KEY: 'admin-key-of-20chars' };
    for (const result of await refusals({ NODE_ENV: 'production', ...weak })) {
      expectOneLine(result, /BACKEND_WEBHOOK_SECRET: must be whsec_ followed by the base64 of 24 to 64 random bytes/, /ADMIN_API_KEY: must be at least 32 characters/);
      for (const value of Object.values(weak)) expect(result.output).not.toContain(value);
    }
    const notBase64 = `whsec_${'!'.repeat(40)}`;
    const result = await refusal('simulator', { NODE_ENV: 'production', BACKEND_WEBHOOK_SECRET: notBase64, ADMIN_API_KEY: 'a'.repeat(40) });
    expectOneLine(result, /BACKEND_WEBHOOK_SECRET: must be whsec_/);
    expect(result.output).not.toContain(notBase64);
  });

  test('the API and the worker refuse to start without PAYLOAD_KEYS, and never repeat a malformed one', async () => {
    const secretsSet = { NODE_ENV: 'production', BACKEND_WEBHOOK_SECRET: generateWebhookSecret(), ADMIN_API_KEY: `prod-admin-${'k'.repeat(30)}` };
    for (const entry of ['api', 'worker'] as const) expectOneLine(await refusal(entry, secretsSet), /PAYLOAD_KEYS must be set when NODE_ENV=production/);
    const short = Buffer.from('sixteen bytes!!!').toString('base64');
    for (const entry of ['api', 'worker'] as const) {
      const result = await refusal(entry, { ...secretsSet, PAYLOAD_KEYS: `k1:${short}` });
      expectOneLine(result, /PAYLOAD_KEYS: key k1: must be the base64 of 32 random bytes/);
      expect(result.output).not.toContain(short);
    }
  });

  test("the repository's development callback secret is refused in production", async () => {
    const result = await refusal('api', {
      NODE_ENV: 'production',
      BACKEND_WEBHOOK_SECRET: 'whsec_ZGV2ZWxvcG1lbnQtb25seS1iYWNrZW5kLXNlY3JldA==',
      ADMIN_API_KEY: `prod-admin-${'k'.repeat(30)}`,
    });
    expectOneLine(result, /the development secret is public/);
  });
});

describe('in development', () => {
  test('the API starts without an admin key: it keeps one in DATA_DIR (mode 0600) and prints where, never the key', async () => {
    const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-dev-admin-'));
    const { databaseUrl, temporalAddress } = testEnv();
    const port = await freePort();
    const env = { NODE_ENV: 'development', DATA_DIR: dataDir, DATABASE_URL: databaseUrl, TEMPORAL_ADDRESS: temporalAddress, PORT: String(port), LOG_LEVEL: 'info' };
    const api = spawnTsProcess({ name: 'dev-admin-key-api', script: ENTRIES.api, env });
    try {
      await api.waitForOutput(/api listening/);
      const file = path.join(dataDir, 'admin-api-key');
      expect(fs.statSync(file).mode & 0o777).toBe(0o600);
      const adminKey = fs.readFileSync(file, 'utf8').trim();
      expect(adminKey.length).toBeGreaterThanOrEqual(32);
      expect(api.output()).toContain(file);
      expect(api.output()).not.toContain(adminKey);
      const created = await fetch(`http://127.0.0.1:${port}/admin/users`, {
        method: 'POST',
        headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
        body: JSON.stringify({ name: 'dev', tier: 'free' }),
      });
      expect(created.status).toBe(201);
    } finally {
      await api.stop();
      fs.rmSync(dataDir, { recursive: true, force: true });
    }
  });

  test('the simulator starts with the development secret and no admin key', async () => {
    const port = await freePort();
    const simulator = spawnTsProcess({ name: 'dev-simulator', script: ENTRIES.simulator, env: { NODE_ENV: 'development', SIMULATOR_PORT: String(port), LOG_LEVEL: 'info' } });
    try {
      await simulator.waitForOutput(/backend simulator listening/);
      expect((await fetch(`http://127.0.0.1:${port}/healthz`)).status).toBe(200);
    } finally {
      await simulator.stop();
    }
  });
});
