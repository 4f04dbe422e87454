import type { Sql } from '../db/client';
import type { Logger } from '../lib/logger';

/** The channel on which the generations trigger announces each new generation_events row: "<user id> <job id> <event id>". */
export const GENERATION_EVENTS_CHANNEL = 'generation_events';

export interface GenerationEvent {
  id: number;
  jobId: string;
  type: string;
  payload: Record<string, unknown>;
  createdAt: Date;
}

export interface EventSubscription {
  /** Reads again when the last read failed (the SSE keep-alive tick calls this). */
  catchUp(): void;
  close(): void;
}

interface Subscriber {
  userId: string;
  /** Only this job's events, for the per-job stream. */
  jobId?: string;
  /** The last event id sent; everything after it is still owed. */
  cursor: number;
  send(event: GenerationEvent): void;
  pumping: boolean;
  dirty: boolean;
  stale: boolean;
  closed: boolean;
}

const PAGE = 200;

/**
 * Fans the change feed out to SSE clients. One LISTEN connection per API process; a notification only wakes the
 * subscribers it concerns, which then read their events from the table after their cursor. Reading rather than trusting
 * the notification makes delivery gap-free and ordered, and makes resuming (Last-Event-ID) the same code path.
 */
export class GenerationEventHub {
  private readonly byUser = new Map<string, Set<Subscriber>>();
  private listening?: Promise<void>;

  constructor(
    private readonly sql: Sql,
    private readonly logger: Logger,
  ) {}

  /** Subscribes from `after` (an event id), or from now when it is undefined; resolves once the backlog was handed to `send`. */
  async subscribe(
    { userId, jobId, after }: { userId: string; jobId?: string; after?: number },
    send: (event: GenerationEvent) => void,
  ): Promise<EventSubscription> {
    await this.listen();
    const subscriber: Subscriber = { userId, jobId, cursor: Number.MAX_SAFE_INTEGER, send, pumping: false, dirty: false, stale: false, closed: false };
    const subscribers = this.byUser.get(userId) ?? new Set<Subscriber>();
    this.byUser.set(userId, subscribers);
    subscribers.add(subscriber);
    const close = () => {
      subscriber.closed = true;
      subscribers.delete(subscriber);
      if (subscribers.size === 0 && this.byUser.get(userId) === subscribers) this.byUser.delete(userId);
    };
    try {
      // Registered before reading the start so that nothing committed in between slips through.
      subscriber.cursor = after ?? (jobId ? 0 : await this.latestEventId(userId));
    } catch (err) {
      close();
      throw err;
    }
    // The backlog (a resume, or a job's history) is read before anything else is sent on the stream.
    await this.pump(subscriber);
    return {
      catchUp: () => {
        if (subscriber.stale) void this.pump(subscriber);
      },
      close,
    };
  }

  private listen(): Promise<void> {
    this.listening ??= this.sql
      .listen(
        GENERATION_EVENTS_CHANNEL,
        (payload) => this.onNotify(payload),
        // Also called after a reconnect of the LISTEN connection: notifications may have been missed, so catch up.
        () => this.pumpAll(),
      )
      .then(() => undefined)
      .catch((err: unknown) => {
        this.listening = undefined;
        throw err;
      });
    return this.listening;
  }

  private onNotify(payload: string): void {
    const [userId, jobId, id] = payload.split(' ');
    const eventId = Number(id);
    for (const s of this.byUser.get(userId) ?? []) {
      if ((s.jobId === undefined || s.jobId === jobId) && eventId > s.cursor) void this.pump(s);
    }
  }

  private pumpAll(): void {
    for (const subscribers of this.byUser.values()) for (const s of subscribers) void this.pump(s);
  }

  private async latestEventId(userId: string): Promise<number> {
    const [row] = await this.sql<{ id: string | null }[]>`select max(id) as id from generation_events where user_id = ${userId}`;
    return Number(row?.id ?? 0);
  }

  /** Sends the subscriber every event after its cursor, in id order; one read at a time per subscriber. */
  private async pump(s: Subscriber): Promise<void> {
    if (s.pumping) {
      s.dirty = true;
      return;
    }
    s.pumping = true;
    try {
      do {
        s.dirty = false;
        for (;;) {
          // Timestamps arrive as text: drizzle switches off postgres.js's date parsing on the shared client.
          const rows = await this.sql<{ id: string; job_id: string; type: string; payload: Record<string, unknown>; created_at: string | Date }[]>`
            select id, job_id, type, payload, created_at from generation_events
            where user_id = ${s.userId} and id > ${s.cursor} ${s.jobId === undefined ? this.sql`` : this.sql`and job_id = ${s.jobId}`}
            order by id limit ${PAGE}`;
          for (const row of rows) {
            if (s.closed) return;
            s.send({ id: Number(row.id), jobId: row.job_id, type: row.type, payload: row.payload, createdAt: new Date(row.created_at) });
            s.cursor = Number(row.id);
          }
          if (rows.length < PAGE) break;
        }
      } while (s.dirty && !s.closed);
      s.stale = false;
    } catch (err) {
      s.stale = true;
      this.logger.warn({ err, userId: s.userId }, 'could not read generation events; will retry');
    } finally {
      s.pumping = false;
    }
  }
}
