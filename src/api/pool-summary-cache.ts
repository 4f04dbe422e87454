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

/** Commits this process made that the summary may not count yet are kept until a read has seen them, at most this many. */
const MAX_UNSEEN_COMMITS = 10_000;

/**
 * Which transactions' writes a read saw: Postgres's snapshot of the read's statement (`pg_current_snapshot()::text`,
 * `xmin:xmax:xip,…`). A committed transaction is in it when it had ended before xmin, or before xmax and is not among
 * the ones still in progress then.
 */
export interface Snapshot {
  xmin: bigint;
  xmax: bigint;
  inProgress: ReadonlySet<bigint>;
}

export function parseSnapshot(text: string): Snapshot {
  const [xmin, xmax, xip = ''] = text.split(':');
  if (xmin === undefined || xmax === undefined) throw new Error(`not a snapshot: ${text}`);
  return { xmin: BigInt(xmin), xmax: BigInt(xmax), inProgress: new Set(xip ? xip.split(',').map(BigInt) : []) };
}

/** Whether a read with this snapshot saw the writes of transaction `xid`, which has committed. */
export function sawCommit(snapshot: Snapshot, xid: bigint): boolean {
  return xid < snapshot.xmin || (xid < snapshot.xmax && !snapshot.inProgress.has(xid));
}

export interface SummaryReads<T> {
  /** The change feed's newest event id (one index probe). */
  newestEventId(): Promise<number>;
  /** The summary itself (one grouped read of the pool's queue), with the snapshot of the statement that read it. */
  read(): Promise<{ value: T; snapshot: Snapshot }>;
}

export interface HeldSummary<T> {
  /** When its read started (clock ms). */
  at: number;
  /** The change feed's newest event id, read just before the summary. */
  eventId: number;
  /** What the read saw. */
  snapshot: Snapshot;
  value: T;
}

/**
 * The pool summary one API process keeps, with the rules above; the reads and the clock are injected. `recent` (status
 * reads: queue positions): the one in hand at once while it is younger than the maximum age, with the check and any read
 * in the background once it is past the minimum age; read now only when it is older, which a process that serves reads
 * never lets it be. `cached` (the submit path): the one in hand at once whatever its age, with the same background check
 * and read; no submit waits for a read of the whole backlog. `fresh`: read now. Either way the next caller gets the new
 * one. Concurrent callers share one read and one probe.
 *
 * No read waits on the check and the read either: they cost in proportion to every user's backlog and to how fast the
 * change feed moves, which are other users' doing. A status read that waited for them paid for a flooder's admitted jobs
 * (docs/decisions.md, "Bounded under hostile clients").
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
  /** This process's commits, each with how to add it to a summary, until a read has seen it. */
  private unseen: { xid: bigint; add: (value: T) => void }[] = [];

  constructor(
    private readonly reads: SummaryReads<T>,
    private readonly clock: () => number = Date.now,
  ) {}

  /**
   * This process committed transaction `xid` (an admission): `add` puts its jobs into a summary. It is added to the
   * summary in hand unless that one's read saw the commit, and to the next summaries read until one has seen it: a read
   * under way may have taken its snapshot before or after the commit, and its snapshot tells which.
   */
  noteCommitted(xid: bigint, add: (value: T) => void): void {
    const held = this.held;
    if (held && !sawCommit(held.snapshot, xid)) add(held.value);
    this.unseen.push({ xid, add });
    if (this.unseen.length > MAX_UNSEEN_COMMITS) this.unseen.shift();
  }

  async get(mode: 'recent' | 'cached' | 'fresh'): Promise<HeldSummary<T>> {
    const held = this.held;
    if (mode === 'fresh' || !held) return this.readNow();
    const age = this.clock() - held.at;
    if (mode === 'recent' && age >= this.maxAge()) return this.readNow();
    if (age >= this.minAge()) {
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

  /** Read again at this age whatever the change feed says: at least SUMMARY_MAX_AGE_MS, and the minimum age. */
  private maxAge(): number {
    return Math.max(SUMMARY_MAX_AGE_MS, this.minAge());
  }

  /** Whether the summary can be used as it is: young enough, or nothing changed in the change feed since it was read. */
  private async stillCurrent(current: HeldSummary<T>): Promise<boolean> {
    const now = this.clock();
    const age = now - current.at;
    if (age < this.minAge()) return true;
    if (age >= this.maxAge()) return false;
    if (now - this.checkedAt < this.minAge()) return true;
    this.checking ??= this.reads.newestEventId().finally(() => (this.checking = undefined));
    if ((await this.checking) !== current.eventId) return false;
    this.checkedAt = this.clock();
    return true;
  }

  /** Reads the summary now; concurrent callers share one read. */
  private async readNow(): Promise<HeldSummary<T>> {
    this.reading ??= this.read().finally(() => (this.reading = undefined));
    return this.reading;
  }

  /** Adds to a summary just read this process's commits its read did not see; the ones it saw, every later read sees. */
  private addUnseen(summary: HeldSummary<T>): void {
    const unseen = this.unseen.filter((commit) => !sawCommit(summary.snapshot, commit.xid));
    for (const commit of unseen) commit.add(summary.value);
    this.unseen = unseen;
  }

  private async read(): Promise<HeldSummary<T>> {
    const at = this.clock();
    const eventId = await this.reads.newestEventId();
    const { value, snapshot } = await this.reads.read();
    this.lastReadMs = this.clock() - at;
    const summary = { at, eventId, snapshot, value };
    // Reads run one at a time: no read still under way can miss what this one saw. Held in the same step as the unseen
    // commits are added, so none noted meanwhile misses both summaries.
    this.addUnseen(summary);
    this.held = summary;
    return summary;
  }
}
