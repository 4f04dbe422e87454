import { UNLIMITED_ADMISSION } from './fairness-helpers';
import { capacityHalved } from './fairness-scenarios';
import { startStack, type Stack } from './harness';

/**
 * GPU capacity halves under load (DESIGN §8): in-flight work finishes, new dispatches follow the new number, paid users
 * keep being served (fairness weight 4 against 1), and the free tier's backlog bound, the smallest, trips first.
 */
describe('capacity halved mid-run', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      env: {
        ...UNLIMITED_ADMISSION,
        TIER_WEIGHTS: 'free:1,pro:4,enterprise:8',
        // Free may queue 3 jobs per slot: 12 at 4 slots, 6 at 2. Paid tiers are bounded far away.
        TIER_BACKLOG_PER_SLOT: 'free:3,pro:100,enterprise:100',
        SIM_P50_MS: '500',
        SIM_P99_MS: '900',
      },
      knobs: { capacity: 50 },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  test('in-flight jobs finish, dispatch follows the new number, paid waits stay within 2×, free is shed', async () => {
    const figures = await capacityHalved(stack, { capacity: 4, phaseMs: 12_000, paidEveryMs: 700, freeEveryMs: 250 });
    console.log('capacity halved:', JSON.stringify(figures));

    expect(figures.maxInFlightBefore).toBeLessThanOrEqual(4);
    expect(figures.maxInFlightAfter).toBeLessThanOrEqual(2);
    // Paid waits stay within 2× (plus scheduling noise of a shared machine). The tail is bounded on the part halving
    // governs, the wait in the gpu queue: with some 13 samples a phase, a p95 is the slowest one, and the way to the
    // queue (the workflow's start and first task on the shared dev server) does not depend on the GPUs but can stall
    // for seconds in a full CI run (one run: 3.1 s in all against 0.9 s in the queue). The whole wait is bounded at its
    // median, which one stall cannot move.
    expect(figures.paidP95GpuQueueWaitAfterMs).toBeLessThanOrEqual(2 * figures.paidP95GpuQueueWaitBeforeMs + 250);
    expect(figures.paidP50WaitAfterMs).toBeLessThanOrEqual(2 * figures.paidP50WaitBeforeMs + 250);
    expect(figures.paidRefused).toBe(0);
    expect(figures.freeRefusedAfter).toBeGreaterThan(0);
    expect(figures.freeAcceptedAfter).toBeGreaterThan(0);
    expect(figures.otherRefusals).toEqual([]);
  });
});
