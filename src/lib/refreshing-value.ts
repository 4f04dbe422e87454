/**
 * A value read from elsewhere and reused: as it is for `freshMs` after its read started; then still answered at once,
 * with a read in the background for the next caller, until `maxAgeMs`; past that a caller waits for the read (a
 * process that asked for nothing for that long). `maxAgeMs` equal to `freshMs` makes it a plain cache: every caller past
 * that age waits. Concurrent callers share one read. A background read that fails leaves the value in hand, and the
 * next caller tries again; a read a caller waits for fails to that caller.
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
    return !held || age >= this.ages.maxAgeMs ? reading : held.value;
  }

  /** Drops the value in hand: the next caller waits for a read (after a change this process made to what it reads). */
  forget(): void {
    this.held = undefined;
  }

  private readNow(): Promise<T> {
    this.reading ??= (async () => {
      const at = this.clock();
      const value = await this.read();
      this.held = { at, value };
      return value;
    })().finally(() => (this.reading = undefined));
    // A caller that waits gets the failure from the promise itself; one answered from the value in hand does not wait.
    this.reading.catch(() => undefined);
    return this.reading;
  }
}
