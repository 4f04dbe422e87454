/**
 * A value read from elsewhere and reused: as it is for `freshMs` after its read started; then still answered at once,
 * with a read in the background for the next caller, until `maxAgeMs`; past that a caller waits for the read (a
 * process that asked for nothing for that long). Concurrent callers share one read. A background read that fails
 * leaves the value in hand, and the next caller tries again; a read a caller waits for fails to that caller.
 */
export class RefreshingValue<T> {
  private held: { at: number; value: T } | undefined;
  private reading: Promise<T> | undefined;

  constructor(
    private readonly read: () => Promise<T>,
    private readonly ages: { freshMs: number; maxAgeMs: number },
    private readonly clock: () => number = Date.now,
  ) {}

  async get(): Promise<T> {
    const held = this.held;
    const age = held === undefined ? Infinity : this.clock() - held.at;
    if (held && age < this.ages.freshMs) return held.value;
    const reading = this.readNow();
    if (!held || age >= this.ages.maxAgeMs) return reading;
    reading.catch(() => undefined);
    return held.value;
  }

  private readNow(): Promise<T> {
    this.reading ??= (async () => {
      const at = this.clock();
      const value = await this.read();
      this.held = { at, value };
      return value;
    })().finally(() => (this.reading = undefined));
    return this.reading;
  }
}
