import fs from 'node:fs';
import path from 'node:path';
import { runMain, startTestInfrastructure, withStack } from './lib/infra';
import { UNLIMITED_ADMISSION } from '../test/fairness-helpers';
import { capacityHalved, equalUsersContend, lanes, starvation, weightedShare } from '../test/fairness-scenarios';
import type { Stack } from '../test/harness';
import type { SimulatorKnobs } from '../simulator/knobs';

/**
 * `npm run bench:fairness`: the GPU scheduling benchmark. Starts its own Temporal dev server (fairness on, one partition)
 * and Postgres exactly as the tests do (test/global-setup.ts), then runs each scenario on a stack of its own — simulator,
 * API, generation worker and GPU dispatcher — with generation time scaled down. Prints the figures and writes
 * bench/out/fairness.json.
 */
const OUT = path.resolve(__dirname, 'out', 'fairness.json');
const CAPACITY = 4;
const LANE_BATCH_JOBS = 120;
const LANE_INTERACTIVE_JOBS = 12;

async function onStack<T>(env: Record<string, string>, knobs: Partial<SimulatorKnobs>, run: (stack: Stack) => Promise<T>): Promise<T> {
  return withStack({ env: { ...UNLIMITED_ADMISSION, GPU_SLOTS: String(CAPACITY), ...env }, knobs: { capacity: 100, ...knobs } }, run);
}

const step = (name: string) => process.stdout.write(`\n▶ ${name}\n`);
const show = (figures: unknown) => process.stdout.write(`${JSON.stringify(figures, null, 2)}\n`);

async function main(): Promise<void> {
  const began = Date.now();
  const infrastructure = await startTestInfrastructure();
  try {
    step(`lanes: users A and C queue ${LANE_BATCH_JOBS} + ${LANE_BATCH_JOBS / 2} batch jobs, then user B submits ${LANE_INTERACTIVE_JOBS} interactive ones, on ${CAPACITY} slots`);
    const laned = await onStack({ SIM_P50_MS: '1000', SIM_P99_MS: '2000' }, {}, (stack) =>
      lanes(stack, { batchJobs: LANE_BATCH_JOBS, interactiveJobs: LANE_INTERACTIVE_JOBS, capacity: CAPACITY }),
    );
    show(laned);

    step(`equal users: 4 users × 25 jobs on ${CAPACITY} slots (generation p50 4 s) — Jain's index, utilisation, handoff`);
    const equal = await onStack({ SIM_P50_MS: '4000', SIM_P99_MS: '6000' }, {}, (stack) =>
      equalUsersContend(stack, { users: 4, jobsEach: 25, capacity: CAPACITY }),
    );
    show(equal);

    step(`weights: free (1) against pro (4), both backlogged, on ${CAPACITY} slots`);
    const weights = await onStack({ SIM_P50_MS: '150', SIM_P99_MS: '300' }, {}, (stack) =>
      weightedShare(stack, { freeJobs: 24, paidJobs: 90, paidTier: 'pro', capacity: CAPACITY }),
    );
    show(weights);

    step(`starvation: user A floods 1,000 jobs, then user B submits one, on ${CAPACITY} slots`);
    const starved = await onStack({ SIM_P50_MS: '1500', SIM_P99_MS: '3000' }, {}, (stack) => starvation(stack, { flood: 1000 }));
    show(starved);

    step('capacity halved: 8 → 4 slots under free-tier overload and steady paid load');
    const halved = await onStack(
      { TIER_BACKLOG_PER_SLOT: 'free:3,pro:100,enterprise:100', SIM_P50_MS: '800', SIM_P99_MS: '1500' },
      {},
      (stack) => capacityHalved(stack, { capacity: 8, phaseMs: 20_000, paidEveryMs: 400, freeEveryMs: 120 }),
    );
    show(halved);


    const figures = {
      jain_index: round(equal.jain, 4),
      weight_ratio_expected: weights.expected,
      weight_ratio_observed: round(weights.observed, 3),
      utilisation: round(equal.utilisation, 4),
      handoff_p99_ms: Math.round(equal.handoffP99Ms),
      starvation_wait_s: round(starved.waitSeconds, 3),
      max_in_flight: equal.maxInFlight,
      capacity: CAPACITY,
      lanes: {
        interactive_start_positions: laned.interactiveStartPositions,
        batch_dispatched_while_interactive_waited: laned.batchDispatchedWhileInteractiveWaited,
        interactive_gpu_queue_wait_p95_ms: Math.round(laned.interactiveGpuQueueWaitP95Ms),
        slot_turnover_ms: Math.round(laned.slotTurnoverMs),
        batch_lane_jain_index: round(laned.batchLaneShare.jain, 4),
        batch_left_after_interactive: laned.batchLeftAfterInteractive,
        batch_finish_s: round(laned.batchFinishSeconds, 1),
        batch_finish_ideal_s: round(laned.batchFinishIdealSeconds, 1),
        batch_succeeded: `${laned.batchSucceeded}/${laned.batchJobs}`,
      },
    };
    fs.mkdirSync(path.dirname(OUT), { recursive: true });
    fs.writeFileSync(OUT, `${JSON.stringify(figures, null, 2)}\n`);
    step(`figures (written to ${path.relative(process.cwd(), OUT)}) after ${Math.round((Date.now() - began) / 1000)} s`);
    show(figures);
  } finally {
    await infrastructure.stop();
  }
}

const round = (n: number, digits: number) => Math.round(n * 10 ** digits) / 10 ** digits;

runMain(main);
