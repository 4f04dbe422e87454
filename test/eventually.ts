/** Waiting in tests: on a condition, with a deadline, or out a settle window; never a sleep that hopes. */

/** Polls `probe` until it returns a value (not undefined) or the deadline passes. */
export async function eventually<T>(probe: () => Promise<T | undefined>, { timeoutMs = 30_000, intervalMs = 100, what = 'condition' } = {}): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** How long an "exactly once" count is watched after the first arrival: a duplicate (a retried step, a redelivery) comes by then. */
export const SETTLE_MS = 3_000;

/**
 * Counts once the settle window after the first arrival has passed: "exactly once" is checked when a duplicate would have
 * arrived, not at the first arrival. Call it after waiting for that first arrival.
 */
export async function settled<T>(count: () => Promise<T>, settleMs = SETTLE_MS): Promise<T> {
  await new Promise((r) => setTimeout(r, settleMs));
  return count();
}
