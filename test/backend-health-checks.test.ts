import { ComfyUiBackend } from '../src/backend/comfyui';
import { ReplicateBackend } from '../src/backend/replicate';
import type { GenerationBackend } from '../src/backend/types';
import { VeoBackend } from '../src/backend/veo';
import { BackendHealth, startHealthChecks } from '../src/dispatch/backend-health';
import { createLogger } from '../src/lib/logger';
import { eventually } from './eventually';
import { startComfyUiFake } from './fakes/comfyui';
import type { FakeServer } from './fakes/fake-server';
import { startReplicateFake } from './fakes/replicate';
import { startVeoFake } from './fakes/veo';
import { useRunDatabase } from './run-database';

/**
 * Routing's health checks on the providers that publish a cheap probe (Replicate GET /v1/account, ComfyUI GET
 * /system_stats, Veo GET /v1beta/models/{model}), run as a dispatcher runs them, recorded in Postgres: a provider in an
 * outage is marked down after two failed checks, and up again at its next answered one.
 */
const database = useRunDatabase({ max: 2 });
const common = { capacity: 1, cost_factor: 1, renders: { image_input: false, video_input: false } };
const options = (callbackUrl = 'http://unused.test/') => ({ callbackUrl, timeoutMs: 500 });

test('a provider whose health check fails is marked down by routing, and up once it answers again', async () => {
  const suffix = Date.now().toString(36);
  const replicate = await startReplicateFake();
  const comfy = await startComfyUiFake();
  const veo = await startVeoFake();
  const fakes: FakeServer[] = [replicate, comfy, veo];
  const backends = new Map<string, GenerationBackend>([
    [`replicate-${suffix}`, new ReplicateBackend({ ...common, name: `replicate-${suffix}`, kind: 'replicate', base_url: replicate.url, credentials_env: 'R', credentials: replicate.token, model: 'o/m' }, options())],
    [`comfyui-${suffix}`, new ComfyUiBackend({ ...common, name: `comfyui-${suffix}`, kind: 'comfyui', base_url: comfy.url, credentials_env: undefined, workflow_path: `${__dirname}/fixtures/comfyui/wan-t2v.json`, fps: 16 }, options())],
    [`veo-${suffix}`, new VeoBackend({ ...common, name: `veo-${suffix}`, kind: 'veo', base_url: veo.url, credentials_env: 'G', credentials: veo.apiKey, model: 'veo-3.0-generate-001' }, options())],
  ]);
  const pools = [...backends.keys()].map((backend) => ({ backend, pool: backend, taskQueue: backend, initialCapacity: 1 }));
  const health = new BackendHealth(database.sql, pools, { circuitFailures: 100, circuitOpenMs: 1_000, stateCacheMs: 0 });
  const checks = startHealthChecks({ backends, health, everyMs: 100, logger: createLogger('health-checks-test', 'warn') });
  const downs = async () => [...(await health.states())].filter(([name]) => backends.has(name)).map(([name, s]) => [name, s.down] as const);
  try {
    await eventually(async () => ((await downs()).every(([, down]) => !down) && (await database.sql`select 1 from backend_health where backend = ${`veo-${suffix}`} and probed_at is not null`).length > 0 ? true : undefined), { what: 'every provider checked and up' });
    for (const fake of fakes) fake.set({ outage: true });
    await eventually(async () => ((await downs()).every(([, down]) => down) ? true : undefined), { timeoutMs: 10_000, what: 'every provider in its outage marked down' });
    for (const fake of fakes) fake.set({ outage: false });
    await eventually(async () => ((await downs()).every(([, down]) => !down) ? true : undefined), { timeoutMs: 10_000, what: 'every provider up again' });
    expect(replicate.requests.some((r) => r.path === '/v1/account')).toBe(true);
    expect(comfy.requests.some((r) => r.path === '/system_stats')).toBe(true);
    expect(veo.requests.some((r) => r.path === '/v1beta/models/veo-3.0-generate-001')).toBe(true);
  } finally {
    checks.stop();
    await Promise.all(fakes.map((f) => f.close()));
  }
});
