import { ApiError } from '../wire/errors';
import { clientRefusals, sseStreamsOpen } from '../lib/metrics';

/** Seconds a refused stream is told to wait: streams end when their clients leave, which nothing here can foresee. */
const RETRY_AFTER_SECONDS = 10;

/**
 * The open event streams of this API process: at most `perUser` of one user and `total` in all. Each stream holds
 * memory, a socket and a share of every poll, so one client opening thousands must not starve the rest. Counted per
 * process: with N API instances behind a balancer a user may hold up to N × perUser.
 */
export class StreamSlots {
  private total = 0;
  private readonly byUser = new Map<string, number>();

  constructor(private readonly limits: { perUser: number; total: number }) {}

  /** Takes a slot for one of the user's streams, or throws the 429 that says why not. The returned function frees it (once). */
  take(userId: string): () => void {
    const mine = this.byUser.get(userId) ?? 0;
    if (mine >= this.limits.perUser) {
      throw refusal('too_many_streams', `at most ${this.limits.perUser} open event streams per user; close one first`, this.limits.perUser);
    }
    if (this.total >= this.limits.total) throw refusal('stream_capacity_reached', 'this server has as many open event streams as it takes; retry shortly', this.limits.total);
    this.byUser.set(userId, mine + 1);
    this.total++;
    sseStreamsOpen.inc();
    let freed = false;
    return () => {
      if (freed) return;
      freed = true;
      this.total--;
      sseStreamsOpen.dec();
      const left = (this.byUser.get(userId) ?? 1) - 1;
      if (left > 0) this.byUser.set(userId, left);
      else this.byUser.delete(userId);
    };
  }
}

function refusal(code: 'too_many_streams' | 'stream_capacity_reached', message: string, limit: number): ApiError {
  clientRefusals.inc({ code });
  return new ApiError(429, code, message, { limit, retry_after_seconds: RETRY_AFTER_SECONDS }, { 'Retry-After': String(RETRY_AFTER_SECONDS) });
}
