import { queuePositionReads } from '../lib/metrics';
import type { GenerationEvent } from './event-hub';

/**
 * Queue positions are computed when read (src/api/queue-position.ts), not stored, so no row change announces them: an
 * API process reads a user's positions while that user has streams with queued jobs — once per user, however many
 * streams (QueuePositionPoller) — and each stream reports a position or ETA when it differs from what it last sent.
 */
export type QueuePositionsOf = (userId: string) => Promise<Map<string, { position: number; etaSeconds: number | null }>>;

export interface QueuePositionChange {
  jobId: string;
  position: number;
  etaSeconds: number | null;
}

/** What one stream has shown of its user's queue positions. */
export class QueuePositionWatch {
  private readonly sent = new Map<string, string>();
  /** Jobs the feed showed entering the queue and not yet leaving it. */
  private readonly seenQueued = new Set<string>();
  /** Jobs the feed showed leaving the queue: never queued again (status only moves forward), so never reported. */
  private readonly departed = new Set<string>();
  /** Unknown at the start; afterwards true only while the stream has queued jobs. */
  private mayHaveQueued = true;

  constructor(private readonly jobId?: string) {}

  /** Every feed event the stream sends: a newly queued job wakes the watch; a job that left the queue is forgotten. */
  observe(event: GenerationEvent): void {
    if (this.jobId !== undefined && event.jobId !== this.jobId) return;
    if (event.payload.status === 'queued') {
      this.seenQueued.add(event.jobId);
      this.mayHaveQueued = true;
    } else {
      this.seenQueued.delete(event.jobId);
      this.sent.delete(event.jobId);
      this.departed.add(event.jobId);
    }
  }

  /** Whether positions need reading for this stream (not while none of its jobs is queued). */
  wantsPositions(): boolean {
    return this.mayHaveQueued;
  }

  /** The positions among the user's that changed since the stream last sent them. */
  apply(positions: Map<string, { position: number; etaSeconds: number | null }>): QueuePositionChange[] {
    const changes: QueuePositionChange[] = [];
    for (const [jobId, { position, etaSeconds }] of positions) {
      // A job that started while the positions were read must not be shown queued after its running event.
      if ((this.jobId !== undefined && jobId !== this.jobId) || this.departed.has(jobId)) continue;
      const shown = `${position}/${etaSeconds}`;
      if (this.sent.get(jobId) === shown) continue;
      this.sent.set(jobId, shown);
      changes.push({ jobId, position, etaSeconds });
    }
    for (const jobId of [...this.sent.keys()]) if (!positions.has(jobId)) this.sent.delete(jobId);
    this.mayHaveQueued = this.sent.size > 0 || this.seenQueued.size > 0;
    return changes;
  }
}

interface Watcher {
  watch: QueuePositionWatch;
  deliver(changes: QueuePositionChange[]): void;
  /** False while the stream's client is behind: it gets the positions of a later read. */
  ready(): boolean;
}

interface WatchedUser {
  watchers: Set<Watcher>;
  timer?: NodeJS.Timeout;
}

/**
 * Reads each user's queue positions for all of the user's streams in this process: at once when the user's first stream
 * opens, then every `pollMs` while any of them may have a queued job. A user's further streams get the next read.
 */
export class QueuePositionPoller {
  private readonly users = new Map<string, WatchedUser>();

  constructor(
    private readonly positionsOf: QueuePositionsOf,
    private readonly pollMs: number,
  ) {}

  /** Delivers the stream's position changes until the returned function is called. */
  watch(userId: string, watch: QueuePositionWatch, deliver: Watcher['deliver'], ready: Watcher['ready']): () => void {
    let user = this.users.get(userId);
    const first = !user;
    if (!user) this.users.set(userId, (user = { watchers: new Set() }));
    const watcher: Watcher = { watch, deliver, ready };
    user.watchers.add(watcher);
    if (first) void this.read(userId, user);
    const watched = user;
    return () => {
      watched.watchers.delete(watcher);
      if (watched.watchers.size > 0 || this.users.get(userId) !== watched) return;
      clearTimeout(watched.timer);
      this.users.delete(userId);
    };
  }

  private async read(userId: string, user: WatchedUser): Promise<void> {
    try {
      const wanting = [...user.watchers].filter((w) => w.ready() && w.watch.wantsPositions());
      if (wanting.length === 0) return;
      queuePositionReads.inc();
      const positions = await this.positionsOf(userId);
      for (const w of wanting) {
        if (!user.watchers.has(w) || !w.ready()) continue;
        const changes = w.watch.apply(positions);
        if (changes.length > 0) w.deliver(changes);
      }
    } catch {
      // The next read tries again.
    } finally {
      if (this.users.get(userId) === user) user.timer = setTimeout(() => void this.read(userId, user), this.pollMs);
    }
  }
}
