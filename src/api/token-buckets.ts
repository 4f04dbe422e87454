import { setRecent } from '../lib/recent-map';

/**
 * Token buckets held in this process, one per key (a client address, a user), for limits that bound what one API process
 * does rather than what the service grants (those live in Postgres, shared by every instance: admission). Memory is
 * bounded: at most `maxKeys` buckets, the one touched longest ago dropped first (a dropped bucket refills to full, so
 * forgetting one only ever lets a key through).
 */
export class TokenBuckets {
  private readonly buckets = new Map<string, { tokens: number; at: number }>();

  constructor(private readonly limits: { burst: number; perSecond: number; maxKeys?: number }) {}

  /** Tokens in the key's bucket at `now`. */
  level(key: string, now = Date.now()): number {
    const bucket = this.buckets.get(key);
    if (!bucket) return this.limits.burst;
    return Math.min(this.limits.burst, bucket.tokens + ((now - bucket.at) / 1000) * this.limits.perSecond);
  }

  /** Seconds until the key's bucket holds a whole token; 0 when it holds one now. */
  waitSeconds(key: string, now = Date.now()): number {
    const level = this.level(key, now);
    return level >= 1 ? 0 : (1 - level) / this.limits.perSecond;
  }

  /** Takes a token when there is one; false (and nothing taken) when the bucket is empty. Either way the key is touched. */
  take(key: string, now = Date.now()): boolean {
    const level = this.level(key, now);
    this.set(key, level >= 1 ? level - 1 : level, now);
    return level >= 1;
  }

  /** Gives back a token taken for something that turned out not to count. */
  giveBack(key: string, now = Date.now()): void {
    this.set(key, Math.min(this.limits.burst, this.level(key, now) + 1), now);
  }

  get size(): number {
    return this.buckets.size;
  }

  private set(key: string, tokens: number, now: number): void {
    setRecent(this.buckets, key, { tokens, at: now }, this.limits.maxKeys ?? 100_000);
  }
}
