import { loadConfig } from '../src/config';
import { createLogger } from '../src/lib/logger';
import { startSimulator, type RunningSimulator } from '../simulator/app';
import { defaultSimulatorKnobs, type SimulatorKnobs } from '../simulator/knobs';
import type { Stack } from './harness';

/**
 * Two simulator processes as the service's backends (routing across backends, docs/backends.md): the primary cheaper
 * (cost 1) and rendering up to 720p, the secondary dearer (cost 1.5) and rendering anything; routing's timings short
 * (health checked every 300 ms, failover after 1 s of failed polls, state read afresh at every decision). Used by
 * test/routing.test.ts and the history recorder's routed paths.
 */
export interface TwoBackends {
  primary: RunningSimulator;
  secondary: RunningSimulator;
  /** The stack's settings that make these two its backends. */
  env: Record<string, string>;
  close(): Promise<void>;
}

/** Short generations (0.3–0.8 s) and room for every job at once at the simulator. */
const QUICK: SimulatorKnobs = { ...defaultSimulatorKnobs, p50Ms: 300, p99Ms: 800, capacity: 20 };

export async function startTwoBackends({ names, capacity }: { names: { primary: string; secondary: string }; capacity: number }): Promise<TwoBackends> {
  const logger = createLogger('test', 'error');
  const webhookSecret = loadConfig({ NODE_ENV: 'test' }).backend.webhookSecret;
  const primary = await startSimulator({ port: 0, knobs: QUICK, webhookSecret, logger });
  const secondary = await startSimulator({ port: 0, knobs: QUICK, webhookSecret, logger });
  const env = {
    BACKENDS: JSON.stringify([
      { name: names.primary, kind: 'simulator', base_url: primary.url, capacity, cost_factor: 1, renders: { resolutions: ['480p', '720p'] } },
      { name: names.secondary, kind: 'simulator', base_url: secondary.url, capacity, cost_factor: 1.5 },
    ]),
    BACKEND_HEALTH_CHECK_MS: '300',
    BACKEND_CIRCUIT_FAILURES: '3',
    BACKEND_CIRCUIT_OPEN_MS: '60000',
    BACKEND_FAILOVER_AFTER_MS: '1000',
    BACKEND_STATE_CACHE_MS: '0',
    POLL_INTERVAL_MS: '300',
  };
  return {
    primary,
    secondary,
    env,
    async close() {
      await primary.close();
      await secondary.close();
    },
  };
}

/** Changes some of a simulator's knobs; `quick` puts its generation times back to the short ones. */
export function setSimKnobs(sim: RunningSimulator, next: Partial<SimulatorKnobs> | 'quick'): void {
  const { p50Ms, p99Ms } = QUICK;
  sim.simulator.engine.updateKnobs({ ...sim.simulator.engine.knobs, ...(next === 'quick' ? { p50Ms, p99Ms } : next) });
}

/** PUT /admin/capacity, as an operator pauses (0), resizes or restores (null) a backend's pool. */
export function setPool(stack: Pick<Stack, 'adminUrl' | 'adminApiKey'>, body: { backend: string; capacity: number | null }): Promise<Response> {
  return fetch(`${stack.adminUrl}/admin/capacity`, { method: 'PUT', headers: { authorization: `Bearer ${stack.adminApiKey}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
}
