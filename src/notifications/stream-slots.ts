import { ApiError } from '../wire/errors';
import { clientRefusals, sseStreamsOpen } from '../lib/metrics';

/** What a full UserSlots answers: a 429 with its code and message, per user or for the whole process. */
export interface SlotRefusals {
  perUser: { code: string; message: (limit: number) => string };
  total: { code: string; message: string };
  /** Seconds the refused client is told to wait. */
  retryAfterSeconds: number;
  /** Counts the slots taken, if something watches them. */
  gauge?: { inc(): void; dec(): void };
}

/**
 * Slots of something each request holds for a while (an event stream, a wait) in this API process: at most `perUser`
 * of one user and `total` in all, so one client holding thousands must not starve the rest. Counted per process: with N
 * API instances behind a balancer a user may hold up to N × perUser.
 */
export class UserSlots {
  private total = 0;
  private readonly byUser = new Map<string, number>();

  constructor(
    private readonly limits: { perUser: number; total: number },
    private readonly refusals: SlotRefusals,
  ) {}

  /** Takes a slot for one of the user's requests, or throws the 429 that says why not. The returned function frees it (once). */
  take(userId: string): () => void {
    const { perUser, total } = this.limits;
    const mine = this.byUser.get(userId) ?? 0;
    if (mine >= perUser) throw this.refusal(this.refusals.perUser.code, this.refusals.perUser.message(perUser), perUser);
    if (this.total >= total) throw this.refusal(this.refusals.total.code, this.refusals.total.message, total);
    this.byUser.set(userId, mine + 1);
    this.total++;
    this.refusals.gauge?.inc();
    let freed = false;
    return () => {
      if (freed) return;
      freed = true;
      this.total--;
      this.refusals.gauge?.dec();
      const left = (this.byUser.get(userId) ?? 1) - 1;
      if (left > 0) this.byUser.set(userId, left);
      else this.byUser.delete(userId);
    };
  }

  private refusal(code: string, message: string, limit: number): ApiError {
    clientRefusals.inc({ code });
    const retryAfter = this.refusals.retryAfterSeconds;
    return new ApiError(429, code, message, { limit, retry_after_seconds: retryAfter }, { 'Retry-After': String(retryAfter) });
  }
}

/**
 * The open event streams of this API process. Each holds memory, a socket and a share of every poll. A refused stream
 * is told to wait 10 s: streams end when their clients leave, which nothing here can foresee.
 */
export class StreamSlots extends UserSlots {
  constructor(limits: { perUser: number; total: number }) {
    super(limits, {
      perUser: { code: 'too_many_streams', message: (limit) => `at most ${limit} open event streams per user; close one first` },
      total: { code: 'stream_capacity_reached', message: 'this server has as many open event streams as it takes; retry shortly' },
      retryAfterSeconds: 10,
      gauge: sseStreamsOpen,
    });
  }
}
