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
    // Tolerant: 2× the wait before, plus scheduling noise of a shared machine.
    expect(figures.paidP95WaitAfterMs).toBeLessThanOrEqual(2 * figures.paidP95WaitBeforeMs + 250);
    expect(figures.paidRefused).toBe(0);
    expect(figures.freeRefusedAfter).toBeGreaterThan(0);
    expect(figures.freeAcceptedAfter).toBeGreaterThan(0);
    expect(figures.otherRefusals).toEqual([]);
  });
});
