/**
 * How long the pool's queue summary (every user's queued jobs, by tier) is reused. Reading it costs time in proportion to
 * the backlog, so it is read at most once per SUMMARY_MIN_AGE_MS (or ten times its last read's duration, when that is
 * longer) per API process however many submits and reads arrive, and again only when the change feed's newest event id
 * moved since (one index probe, at most once per SUMMARY_MIN_AGE_MS) or SUMMARY_MAX_AGE_MS passed (an event with a lower
 * id may commit after a higher one was seen).
 */
export const SUMMARY_MIN_AGE_MS = 250;
export const SUMMARY_MAX_AGE_MS = 1_000;
/** A summary is never re-read sooner than this many of its reads' durations, so reading costs at most a tenth of a core. */
const READ_DURATIONS_PER_READ = 10;

export interface SummaryReads<T> {
  /** The change feed's newest event id (one index probe). */
  newestEventId(): Promise<number>;
  /** The summary itself (one grouped read of the pool's queue). */
  read(): Promise<T>;
}

export interface HeldSummary<T> {
  /** When its read started (clock ms). */
  at: number;
  /** When its read answered (clock ms): its snapshot was taken between `at` and this. */
  doneAt: number;
  /** The change feed's newest event id, read just before the summary. */
  eventId: number;
  value: T;
}

/**
 * The pool summary one API process keeps, with the rules above; the reads and the clock are injected. `current` (status
 * reads): read again first when it may be out of date. `cached` (the submit path): the one in hand at once, with the
 * check and any read in the background, so no submit waits for a read of the whole backlog; the next caller gets the
 * new one. `fresh`: read now. Concurrent callers share one read and one probe.
 */
export class PoolSummaryCache<T> {
  private held: HeldSummary<T> | undefined;
  private reading: Promise<HeldSummary<T>> | undefined;
  /** How long the last read took. */
  private lastReadMs = 0;
  /** When the change feed last showed nothing new since the summary; shared by concurrent callers. */
  private checkedAt = 0;
  private checking: Promise<number> | undefined;
  private revalidating: Promise<void> | undefined;

  constructor(
    private readonly reads: SummaryReads<T>,
    private readonly clock: () => number = Date.now,
  ) {}

  /**
   * The summary in hand, to add what this process admitted in place: only one whose read had answered before the
   * admission began (`admissionBeganAt`, clock ms), so its snapshot surely predates the commit. A read still under way
   * then may or may not count the job (its snapshot is taken on the server, some time after it was sent): nothing is
   * added, and the next read counts it.
   */
  inHand(admissionBeganAt: number): T | undefined {
    const held = this.held;
    return held && held.doneAt < admissionBeganAt ? held.value : undefined;
  }

  async get(mode: 'current' | 'cached' | 'fresh'): Promise<HeldSummary<T>> {
    const held = this.held;
    if (mode === 'fresh' || !held) return this.readNow();
    if (mode === 'current') return (await this.stillCurrent(held)) ? held : this.readNow();
    if (this.clock() - held.at >= this.minAge()) {
      this.revalidating ??= (async () => {
        if (!(await this.stillCurrent(held))) await this.readNow();
      })()
        // A failed read is tried again by the next caller; the summary in hand serves meanwhile.
        .catch(() => undefined)
        .finally(() => (this.revalidating = undefined));
    }
    return held;
  }

  /** Read again no sooner than this after a read: at least SUMMARY_MIN_AGE_MS, and ten times the last read's duration. */
  private minAge(): number {
    return Math.max(SUMMARY_MIN_AGE_MS, READ_DURATIONS_PER_READ * this.lastReadMs);
  }

  /** Whether the summary can be used as it is: young enough, or nothing changed in the change feed since it was read. */
  private async stillCurrent(current: HeldSummary<T>): Promise<boolean> {
    const now = this.clock();
    const age = now - current.at;
    if (age < this.minAge()) return true;
    if (age >= Math.max(SUMMARY_MAX_AGE_MS, this.minAge())) return false;
    if (now - this.checkedAt < this.minAge()) return true;
    this.checking ??= this.reads.newestEventId().finally(() => (this.checking = undefined));
    if ((await this.checking) !== current.eventId) return false;
    this.checkedAt = this.clock();
    return true;
  }

  /** Reads the summary now; concurrent callers share one read. */
  private async readNow(): Promise<HeldSummary<T>> {
    this.reading ??= this.read().finally(() => (this.reading = undefined));
    const next = await this.reading;
    if (!this.held || next.at >= this.held.at) this.held = next;
    return next;
  }

  private async read(): Promise<HeldSummary<T>> {
    const at = this.clock();
    const eventId = await this.reads.newestEventId();
    const value = await this.reads.read();
    const doneAt = this.clock();
    this.lastReadMs = doneAt - at;
    return { at, doneAt, eventId, value };
  }
}
