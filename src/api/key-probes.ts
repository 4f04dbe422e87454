/**
 * Idempotency-Key look-ups of users over their rate, gathered: every key asked about within `lingerMs` of the first is
 * looked up in one statement for that user. A user whose token bucket is known empty is refused in the process, except
 * when the submit replays an earlier one; telling the two apart takes a look-up of the key. One per request made a flood
 * of keyed submits (each with a new key) cost a round trip each, 200 a second for one flooder; gathered, it costs one
 * per `lingerMs`. Only refusals wait for it: a user within its rate never comes here.
 */
export type KeysTaken = (userId: string, keys: string[]) => Promise<Set<string>>;

/** Keys in one look-up at most; a batch this full is looked up at once. */
export const KEY_PROBE_MAX_BATCH = 500;

interface Waiter {
  resolve(taken: boolean): void;
  reject(err: unknown): void;
}

export class KeyProbes {
  private readonly batches = new Map<string, Map<string, Waiter[]>>();

  constructor(
    private readonly keysTaken: KeysTaken,
    private readonly lingerMs: number,
  ) {}

  /** Whether the user's `key` names an earlier submit, answered with the other keys asked about meanwhile. */
  taken(userId: string, key: string): Promise<boolean> {
    let batch = this.batches.get(userId);
    if (!batch) {
      const opened = new Map<string, Waiter[]>();
      batch = opened;
      this.batches.set(userId, opened);
      setTimeout(() => void this.lookUp(userId, opened), this.lingerMs).unref();
    }
    const waiting = batch;
    return new Promise<boolean>((resolve, reject) => {
      const waiters = waiting.get(key);
      if (waiters) waiters.push({ resolve, reject });
      else waiting.set(key, [{ resolve, reject }]);
      if (waiting.size >= KEY_PROBE_MAX_BATCH) void this.lookUp(userId, waiting);
    });
  }

  /** Users with a look-up gathering keys (for tests and the bound: one batch per user over its rate, at most). */
  get gathering(): number {
    return this.batches.size;
  }

  private async lookUp(userId: string, batch: Map<string, Waiter[]>): Promise<void> {
    // A batch is looked up once: by its timer, or earlier when full (then the timer finds it gone).
    if (this.batches.get(userId) !== batch) return;
    this.batches.delete(userId);
    try {
      const taken = await this.keysTaken(userId, [...batch.keys()]);
      for (const [key, waiters] of batch) for (const w of waiters) w.resolve(taken.has(key));
    } catch (err) {
      for (const waiters of batch.values()) for (const w of waiters) w.reject(err);
    }
  }
}
