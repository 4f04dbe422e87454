import type { BackendErrorCode, BackendJobError } from '../src/backend/types';
import type { Random } from './clock';
import type { SimulatorKnobs } from './knobs';

/** How a job's run will go, decided once when it starts on a GPU. */
export interface RunPlan {
  /** Full simulated generation time (already scaled); progress is elapsed / durationMs. */
  durationMs: number;
  /** Run time at which the job ends; null when it hangs until cancelled. */
  endAtMs: number | null;
  /** null means success. */
  error: BackendJobError | null;
}

/** 99th percentile of the standard normal distribution. */
const Z99 = 2.326;
const SLOW_FACTOR = 10;

const PERMANENT_CODES: BackendErrorCode[] = ['content_policy_violation', 'invalid_input'];
const TRANSIENT_CODES: BackendErrorCode[] = ['internal_error', 'gpu_unavailable'];
const MESSAGES: Record<BackendErrorCode, string> = {
  content_policy_violation: 'the prompt was rejected by the content policy',
  invalid_input: 'the request cannot be generated as specified',
  internal_error: 'the generation worker crashed',
  gpu_unavailable: 'the GPU running the job became unavailable',
};

/** One draw of generation time in ms (unscaled): lognormal with the given median and 99th percentile. */
export function sampleGenerationMs(p50Ms: number, p99Ms: number, random: Random): number {
  const sigma = Math.max(0, Math.log(p99Ms / p50Ms) / Z99);
  // Box-Muller; 1 - u keeps the log argument in (0, 1].
  const z = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  return p50Ms * Math.exp(sigma * z);
}

function pick<T>(items: T[], random: Random): T {
  return items[Math.min(items.length - 1, Math.floor(random() * items.length))];
}

function failure(kind: 'permanent' | 'transient', random: Random): BackendJobError {
  const code = pick(kind === 'permanent' ? PERMANENT_CODES : TRANSIENT_CODES, random);
  return { code, message: MESSAGES[code], retryable: kind === 'transient' };
}

/** Prompt markers force an outcome so tests are deterministic: [fail:permanent], [fail:transient], [slow], [hang]. */
export function planRun(prompt: string, knobs: SimulatorKnobs, random: Random): RunPlan {
  const slow = prompt.includes('[slow]') ? SLOW_FACTOR : 1;
  const durationMs = Math.max(1, sampleGenerationMs(knobs.p50Ms, knobs.p99Ms, random) * knobs.timeScale * slow);
  if (prompt.includes('[hang]')) return { durationMs, endAtMs: null, error: null };

  let kind: 'permanent' | 'transient' | null = null;
  if (prompt.includes('[fail:permanent]')) kind = 'permanent';
  else if (prompt.includes('[fail:transient]')) kind = 'transient';
  else {
    const roll = random();
    if (roll < knobs.permanentFailureRate) kind = 'permanent';
    else if (roll < knobs.permanentFailureRate + knobs.transientFailureRate) kind = 'transient';
  }
  if (!kind) return { durationMs, endAtMs: durationMs, error: null };
  // Failures strike somewhere in the run, not only at the end.
  return { durationMs, endAtMs: durationMs * (0.1 + 0.9 * random()), error: failure(kind, random) };
}
