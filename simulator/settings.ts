import { z } from 'zod';
import { backendWebhookSecretOf, ConfigError, flag, int, parseSettings, processSettings, processSettingProblems } from '../src/config';
import { defaultSimulatorKnobs, simulatorKnobsSchema, type SimulatorKnobs } from './knobs';

/**
 * The simulator's settings, validated once at boot: where it listens and its knobs (SIM_*), and the process settings it
 * shares with the service (src/config.ts processSettings: NODE_ENV, LOG_LEVEL, the admin key that guards its knobs, the
 * secret it signs callbacks with), under the same fail-closed rules.
 */
const rate = (fallback: number) => z.coerce.number().min(0).max(1).default(fallback);

const simulatorEnvSchema = z.object({
  ...processSettings,
  SIMULATOR_PORT: int(4000),
  SIMULATOR_HOST: z.string().default('127.0.0.1'),
  SIM_CAPACITY: int(defaultSimulatorKnobs.capacity),
  SIM_P50_MS: int(defaultSimulatorKnobs.p50Ms),
  SIM_P99_MS: int(defaultSimulatorKnobs.p99Ms),
  SIM_TIME_SCALE: z.coerce.number().positive().default(defaultSimulatorKnobs.timeScale),
  SIM_TRANSIENT_FAILURE_RATE: rate(0),
  SIM_PERMANENT_FAILURE_RATE: rate(0),
  SIM_CALLBACK_LOSS_RATE: rate(0),
  SIM_CALLBACK_DUPLICATE_RATE: rate(0),
  SIM_CALLBACK_DELAY_MS: int(0),
  SIM_CALLBACK_REORDER_RATE: rate(0),
  SIM_ERROR_RATE: rate(0),
  SIM_SLOW_RESPONSE_RATE: rate(0),
  SIM_SLOW_RESPONSE_MS: int(0),
  SIM_OUTAGE: flag(false),
});

export function loadSimulatorSettings(env: Record<string, string | undefined> = process.env) {
  const e = parseSettings(simulatorEnvSchema, env);
  const problems = processSettingProblems(e);
  if (problems.length > 0) throw new ConfigError(problems.join('; '));
  const knobs: SimulatorKnobs = simulatorKnobsSchema.parse({
    capacity: Math.max(1, e.SIM_CAPACITY),
    p50Ms: e.SIM_P50_MS,
    p99Ms: Math.max(e.SIM_P99_MS, e.SIM_P50_MS),
    timeScale: e.SIM_TIME_SCALE,
    transientFailureRate: e.SIM_TRANSIENT_FAILURE_RATE,
    permanentFailureRate: e.SIM_PERMANENT_FAILURE_RATE,
    callbackLossRate: e.SIM_CALLBACK_LOSS_RATE,
    callbackDuplicateRate: e.SIM_CALLBACK_DUPLICATE_RATE,
    callbackDelayMs: e.SIM_CALLBACK_DELAY_MS,
    callbackReorderRate: e.SIM_CALLBACK_REORDER_RATE,
    errorRate: e.SIM_ERROR_RATE,
    slowResponseRate: e.SIM_SLOW_RESPONSE_RATE,
    slowResponseMs: e.SIM_SLOW_RESPONSE_MS,
    outage: e.SIM_OUTAGE,
  });
  return {
    logLevel: e.LOG_LEVEL,
    port: e.SIMULATOR_PORT,
    host: e.SIMULATOR_HOST,
    knobs,
    /** Signs the backend's callbacks. */
    webhookSecret: backendWebhookSecretOf(e),
    /** Guards the knobs (PUT /admin/config); unset in development and test. */
    adminApiKey: e.ADMIN_API_KEY,
    /** A rotation's retiring secret: never used here, but scrubbed from the logs like the others. */
    previousWebhookSecret: e.BACKEND_WEBHOOK_SECRET_PREVIOUS,
  };
}

export type SimulatorSettings = ReturnType<typeof loadSimulatorSettings>;

/** Every secret value in the settings, for the log scrubber. */
export function simulatorSecrets(settings: SimulatorSettings): string[] {
  return [settings.adminApiKey, settings.webhookSecret, settings.previousWebhookSecret].filter((s): s is string => s !== undefined && s.length > 0);
}
