import { z } from 'zod';

/** Every behaviour of the backend simulator that tests and benchmarks turn. Set from env at boot, changed at runtime by PUT /admin/config. */
export const simulatorKnobsSchema = z.object({
  /** Jobs the simulated GPU farm runs at once; more wait in its own queue. */
  capacity: z.number().int().min(1).max(10_000),
  /** Generation time: lognormal with this median and 99th percentile, multiplied by timeScale. */
  p50Ms: z.number().positive(),
  p99Ms: z.number().positive(),
  timeScale: z.number().positive(),
  transientFailureRate: z.number().min(0).max(1),
  permanentFailureRate: z.number().min(0).max(1),
  callbackLossRate: z.number().min(0).max(1),
  callbackDuplicateRate: z.number().min(0).max(1),
  /** Each callback waits a uniform random delay in [0, callbackDelayMs]. */
  callbackDelayMs: z.number().int().min(0),
  /** Probability that a job's start callback is held back and sent after its end callback. */
  callbackReorderRate: z.number().min(0).max(1),
  /** Probability that an API request answers 503. */
  errorRate: z.number().min(0).max(1),
  slowResponseRate: z.number().min(0).max(1),
  slowResponseMs: z.number().int().min(0),
  /** Every request answers 503 and no job makes progress. */
  outage: z.boolean(),
});

export type SimulatorKnobs = z.infer<typeof simulatorKnobsSchema>;

export const defaultSimulatorKnobs: SimulatorKnobs = {
  capacity: 8,
  p50Ms: 30_000,
  p99Ms: 180_000,
  timeScale: 1,
  transientFailureRate: 0,
  permanentFailureRate: 0,
  callbackLossRate: 0,
  callbackDuplicateRate: 0,
  callbackDelayMs: 0,
  callbackReorderRate: 0,
  errorRate: 0,
  slowResponseRate: 0,
  slowResponseMs: 0,
  outage: false,
};
