import { ConfigError } from '../src/config';
import { generateWebhookSecret } from '../src/lib/webhook-signature';
import { defaultSimulatorKnobs } from './knobs';
import { loadSimulatorSettings, simulatorSecrets } from './settings';

describe("the simulator's own settings", () => {
  test('default to the knobs of an idle backend on port 4000, with the development secret', () => {
    const settings = loadSimulatorSettings({});
    expect(settings).toMatchObject({ port: 4000, host: '127.0.0.1', knobs: defaultSimulatorKnobs, adminApiKey: undefined });
    expect(settings.webhookSecret).toMatch(/^whsec_/);
  });

  test('take SIM_* as knobs, a p99 below the p50 raised to it, and a capacity of at least one', () => {
    const { knobs } = loadSimulatorSettings({ SIM_P50_MS: '500', SIM_P99_MS: '100', SIM_CAPACITY: '0', SIM_OUTAGE: 'true', SIM_ERROR_RATE: '0.5' });
    expect(knobs).toMatchObject({ p50Ms: 500, p99Ms: 500, capacity: 1, outage: true, errorRate: 0.5 });
    expect(() => loadSimulatorSettings({ SIM_ERROR_RATE: '2' })).toThrow(/SIM_ERROR_RATE/);
  });

  test("ignore the service's settings, but fail closed on the shared ones as the service does", () => {
    expect(loadSimulatorSettings({ GPU_SLOTS: 'many', RETENTION_JOBS_DAYS: '0' }).port).toBe(4000);
    expect(() => loadSimulatorSettings({ NODE_ENV: 'production' })).toThrow(ConfigError);
    expect(() => loadSimulatorSettings({ NODE_ENV: 'production' })).toThrow(/BACKEND_WEBHOOK_SECRET and ADMIN_API_KEY must be set when NODE_ENV=production/);
    const production = { NODE_ENV: 'production', ADMIN_API_KEY: 'k'.repeat(40), BACKEND_WEBHOOK_SECRET: generateWebhookSecret() };
    const settings = loadSimulatorSettings(production);
    expect(settings.webhookSecret).toBe(production.BACKEND_WEBHOOK_SECRET);
    expect(simulatorSecrets(settings).sort()).toEqual([production.ADMIN_API_KEY, production.BACKEND_WEBHOOK_SECRET].sort());
  });
});
