import { UNLIMITED_ADMISSION } from './fairness-helpers';
import { starvation } from './fairness-scenarios';
import { startStack, type Stack } from './harness';

/** No user starves another: a flood of 1,000 jobs from one user does not hold back one job from the next. */
// About two minutes on two cores; TEST_STARVATION_FLOOD=200 runs a smaller flood (the behaviour does not depend on its size).
const FLOOD = Number(process.env.TEST_STARVATION_FLOOD ?? 1000);

describe('a flooding user cannot starve another', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({ env: { ...UNLIMITED_ADMISSION, GPU_SLOTS: '4', SIM_P50_MS: '1000', SIM_P99_MS: '2000' }, knobs: { capacity: 50 } });
  });
  afterAll(async () => {
    await stack?.close();
  });

  test(`user A floods ${FLOOD} jobs, user B then submits one: at most one of A's goes out between B's task reaching the queue and B's start`, async () => {
    const figures = await starvation(stack, { flood: FLOOD });
    console.log('starvation:', JSON.stringify(figures));
    // Once B's task is in the gpu queue, the next freed slot is B's (one of A's may be on its way out as it arrives) ...
    expect(figures.floodDispatchedBeforeB).toBeLessThanOrEqual(1);
    // ... so B waits at most about one slot turnover there; end to end, plus its workflow's way to the queue.
    expect(figures.gpuQueueWaitSeconds).toBeLessThan(figures.meanRunSeconds + 1);
    expect(figures.waitSeconds).toBeLessThan(figures.meanRunSeconds + 5);
  }, 600_000);
});
