import type { GenerationEvent } from './event-hub';

/**
 * Queue positions are computed when read (src/api/queue-position.ts), not stored, so no row change announces them: a
 * stream polls its user's queued jobs and reports a position or ETA when it differs from what that stream last sent.
 */
export type QueuePositionsOf = (userId: string) => Promise<Map<string, { position: number; etaSeconds: number | null }>>;

export interface QueuePositionChange {
  jobId: string;
  position: number;
  etaSeconds: number | null;
}

export class QueuePositionWatch {
  private readonly sent = new Map<string, string>();
  /** Jobs the feed showed entering the queue and not yet leaving it. */
  private readonly seenQueued = new Set<string>();
  /** Jobs the feed showed leaving the queue: never queued again (status only moves forward), so never reported. */
  private readonly departed = new Set<string>();
  /** Unknown at the start; afterwards true only while the stream has queued jobs. */
  private mayHaveQueued = true;

  constructor(
    private readonly positionsOf: QueuePositionsOf,
    private readonly userId: string,
    private readonly jobId?: string,
  ) {}

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

  /** The positions that changed since the last poll (nothing is read while no job of the stream is queued). */
  async poll(): Promise<QueuePositionChange[]> {
    if (!this.mayHaveQueued) return [];
    const positions = await this.positionsOf(this.userId);
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
