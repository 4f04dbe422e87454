import type { Sql } from '../db/client';
import type { Logger } from '../lib/logger';

export interface GenerationEvent {
  id: number;
  jobId: string;
  type: string;
  payload: Record<string, unknown>;
  createdAt: Date;
}

/** Where a stream's events go. */
export interface EventSink {
  send(event: GenerationEvent): void;
  /** False while the client is behind (its socket's buffer is full): nothing more is read for it until `resume()`. */
  ready(): boolean;
}

/** Why a stream does not resume where its client asked, and where it starts instead. */
export interface Resync {
  reason: 'resume_window_exceeded' | 'unknown_event_id';
  /** The user's newest event id: the stream goes on live after it. */
  cursor: number;
}

export interface EventSubscription {
  /** Set when the client's Last-Event-ID is not replayed: it is too far back, or names no event the user had. */
  resync?: Resync;
  /** Begins sending: the backlog (a resume, or a job's history), then live events. */
  start(): void;
  /** The client caught up: sends what it is owed. */
  resume(): void;
  /** Reads again when the last read failed (the SSE keep-alive tick calls this). */
  catchUp(): void;
  close(): void;
}

/** How far back a resume may reach: a Last-Event-ID followed by more events, or by an older one, is not replayed. */
export interface ResumeWindow {
  maxEvents: number;
  maxAgeMs: number;
}

interface Subscriber {
  userId: string;
  /** Only this job's events, for the per-job stream. */
  jobId?: string;
  /** The last event id sent; everything after it is still owed. */
  cursor: number;
  /** The user's newest event id when a poll last woke this stream (a job's stream skips the user's other jobs' events). */
  woken: number;
  sink: EventSink;
  started: boolean;
  pumping: boolean;
  dirty: boolean;
  stale: boolean;
  /** Stopped because the client was behind; `resume()` starts it again. */
  paused: boolean;
  closed: boolean;
}

const PAGE = 200;
/** Users whose newest event ids one poll reads per statement. */
const POLL_BATCH = 1_000;

/**
 * Fans the change feed out to SSE clients. While an API process has streams open it polls, every `pollMs`, the newest
 * event id of each of their users (one statement, an index probe per user: generation_events_user_idx), and wakes only
 * the streams of users with something new, which then read their events from the table after their cursor. A user's
 * events commit in id order (the trigger's per-user lock), so the newest id never runs ahead of one still to commit.
 * Reading rather than trusting a wake-up makes delivery gap-free and ordered, and makes resuming (Last-Event-ID) the same
 * code path. No NOTIFY: it would serialize every projection write at commit (drizzle/0014).
 */
export class GenerationEventHub {
  private readonly byUser = new Map<string, Set<Subscriber>>();
  private polling?: NodeJS.Timeout;
  private pollFailing = false;

  constructor(
    private readonly sql: Sql,
    private readonly logger: Logger,
    private readonly pollMs: number,
    private readonly resumeWindow: ResumeWindow = { maxEvents: 1_000, maxAgeMs: 3_600_000 },
  ) {}

  /**
   * Subscribes from `after` (an event id), or from now when it is undefined; nothing is sent before `start()`. A resume
   * further back than the resume window starts from now instead, and says so (`resync`): replaying a long or old history
   * costs the service more than the client's re-listing its jobs.
   */
  async subscribe({ userId, jobId, after }: { userId: string; jobId?: string; after?: number }, sink: EventSink): Promise<EventSubscription> {
    const subscriber: Subscriber = {
      userId,
      jobId,
      cursor: Number.MAX_SAFE_INTEGER,
      woken: 0,
      sink,
      started: false,
      pumping: false,
      dirty: false,
      stale: false,
      paused: false,
      closed: false,
    };
    const subscribers = this.byUser.get(userId) ?? new Set<Subscriber>();
    this.byUser.set(userId, subscribers);
    subscribers.add(subscriber);
    this.polling ??= this.schedulePoll();
    const close = () => {
      subscriber.closed = true;
      subscribers.delete(subscriber);
      if (subscribers.size === 0 && this.byUser.get(userId) === subscribers) this.byUser.delete(userId);
    };
    let resync: Resync | undefined;
    try {
      // Registered before reading the start so that nothing committed in between slips through.
      if (after === undefined) subscriber.cursor = jobId ? 0 : ((await this.newestEventIds([userId])).get(userId) ?? 0);
      else {
        const { newest, replayable } = await this.resumable(userId, jobId, after);
        if (after > newest) resync = { reason: 'unknown_event_id', cursor: newest };
        else if (!replayable) resync = { reason: 'resume_window_exceeded', cursor: newest };
        subscriber.cursor = resync?.cursor ?? after;
      }
    } catch (err) {
      close();
      throw err;
    }
    return {
      resync,
      start: () => {
        subscriber.started = true;
        void this.pump(subscriber);
      },
      resume: () => {
        if (!subscriber.paused) return;
        subscriber.paused = false;
        void this.pump(subscriber);
      },
      catchUp: () => {
        if (subscriber.stale) void this.pump(subscriber);
      },
      close,
    };
  }

  /**
   * The user's newest event id, and whether the events after `after` (of the job, for a job's stream) lie within the
   * resume window: no more than maxEvents of them, the first no older than maxAgeMs. Index ranges of at most maxEvents + 1
   * entries (generation_events_user_idx, generation_events_job_idx), however long the history.
   */
  private async resumable(userId: string, jobId: string | undefined, after: number): Promise<{ newest: number; replayable: boolean }> {
    const { maxEvents, maxAgeMs } = this.resumeWindow;
    const missed = jobId === undefined ? this.sql`user_id = ${userId} and id > ${after}` : this.sql`job_id = ${jobId} and id > ${after}`;
    const [row] = await this.sql<{ newest: string | null; too_many: boolean; too_old: boolean | null }[]>`
      select (select max(id) from generation_events where user_id = ${userId}) as newest,
             exists (select 1 from generation_events where ${missed} order by id offset ${maxEvents} limit 1) as too_many,
             (select created_at from generation_events where ${missed} order by id limit 1) < now() - ${maxAgeMs}::float8 * interval '1 millisecond' as too_old`;
    return { newest: Number(row.newest ?? 0), replayable: !row.too_many && !row.too_old };
  }

  /** One round of the poll: wakes the streams whose users have events past their cursors; stops once no stream is open. */
  private async poll(): Promise<void> {
    try {
      const users = [...this.byUser.keys()];
      for (let i = 0; i < users.length; i += POLL_BATCH) {
        for (const [userId, newest] of await this.newestEventIds(users.slice(i, i + POLL_BATCH))) {
          for (const s of this.byUser.get(userId) ?? []) {
            if (newest <= s.cursor || newest <= s.woken) continue;
            // The read that follows sees every event up to `newest` (committed before this poll read it).
            s.woken = newest;
            void this.pump(s);
          }
        }
      }
      if (this.pollFailing) this.logger.info('polling generation events again');
      this.pollFailing = false;
    } catch (err) {
      // Once per outage, not once per poll.
      if (!this.pollFailing) this.logger.warn({ err }, 'could not poll generation events; will retry');
      this.pollFailing = true;
    } finally {
      this.polling = this.byUser.size > 0 ? this.schedulePoll() : undefined;
    }
  }

  private schedulePoll(): NodeJS.Timeout {
    return setTimeout(() => void this.poll(), this.pollMs).unref();
  }

  /** Each user's newest event id (0 for none): one statement, an index probe per user (generation_events_user_idx). */
  private async newestEventIds(userIds: string[]): Promise<Map<string, number>> {
    const rows = await this.sql<{ user_id: string; id: string | null }[]>`
      select u.user_id, (select max(e.id) from generation_events e where e.user_id = u.user_id) as id
      from unnest(${userIds}::text[]) as u(user_id)`;
    return new Map(rows.map((row) => [row.user_id, Number(row.id ?? 0)]));
  }

  /**
   * Sends the subscriber every event after its cursor, in id order; one read at a time per subscriber. A client that is
   * behind stops it (paused) until it has read what was sent: the events wait in the table, not in this process.
   */
  private async pump(s: Subscriber): Promise<void> {
    if (!s.started || s.closed) return;
    if (s.pumping) {
      s.dirty = true;
      return;
    }
    s.pumping = true;
    try {
      do {
        s.dirty = false;
        for (;;) {
          if (!s.sink.ready()) {
            s.paused = true;
            return;
          }
          // Timestamps arrive as text: drizzle switches off postgres.js's date parsing on the shared client.
          const rows = await this.sql<{ id: string; job_id: string; type: string; payload: Record<string, unknown>; created_at: string | Date }[]>`
            select id, job_id, type, payload, created_at from generation_events
            where user_id = ${s.userId} and id > ${s.cursor} ${s.jobId === undefined ? this.sql`` : this.sql`and job_id = ${s.jobId}`}
            order by id limit ${PAGE}`;
          for (const row of rows) {
            if (s.closed) return;
            if (!s.sink.ready()) {
              s.paused = true;
              return;
            }
            s.sink.send({ id: Number(row.id), jobId: row.job_id, type: row.type, payload: row.payload, createdAt: new Date(row.created_at) });
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
