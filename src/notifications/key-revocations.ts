import type { Sql } from '../db/client';
import type { Logger } from '../lib/logger';

/** Key ids one check reads per statement. */
const CHECK_BATCH = 1_000;

/**
 * Ends the event streams of revoked API keys. A stream authenticates once, when it opens, and may stay open for days; so
 * while an API process has streams open it asks Postgres, every `checkMs`, which of their keys were revoked (or deleted)
 * since — one statement for all of them, not one per stream — and tells those streams. A key revoked as of a later
 * time (a rotation's overlap) is still valid until then.
 */
export class RevokedKeyWatch {
  private readonly streams = new Map<string, Set<() => void>>();
  private timer?: NodeJS.Timeout;
  private failing = false;

  constructor(
    private readonly sql: Sql,
    private readonly logger: Logger,
    private readonly checkMs: number,
  ) {}

  /** Calls `onRevoked` once the key `keyId` is found revoked, unless the returned function was called first. */
  watch(keyId: string, onRevoked: () => void): () => void {
    const ofKey = this.streams.get(keyId) ?? new Set<() => void>();
    this.streams.set(keyId, ofKey);
    ofKey.add(onRevoked);
    this.timer ??= this.schedule();
    return () => {
      ofKey.delete(onRevoked);
      if (ofKey.size === 0 && this.streams.get(keyId) === ofKey) this.streams.delete(keyId);
    };
  }

  private schedule(): NodeJS.Timeout {
    return setTimeout(() => void this.check(), this.checkMs).unref();
  }

  private async check(): Promise<void> {
    try {
      const keyIds = [...this.streams.keys()];
      for (let i = 0; i < keyIds.length; i += CHECK_BATCH) {
        const revoked = await this.sql<{ id: string }[]>`
          select k.id from unnest(${keyIds.slice(i, i + CHECK_BATCH)}::text[]) as k(id)
          where not exists (select 1 from api_keys a where a.id = k.id and (a.revoked_at is null or a.revoked_at > now()))`;
        for (const { id } of revoked) {
          const ended = this.streams.get(id);
          this.streams.delete(id);
          for (const onRevoked of ended ?? []) onRevoked();
        }
      }
      if (this.failing) this.logger.info('checking revoked API keys again');
      this.failing = false;
    } catch (err) {
      if (!this.failing) this.logger.warn({ err }, 'could not check API keys of open streams for revocation; will retry');
      this.failing = true;
    } finally {
      this.timer = this.streams.size > 0 ? this.schedule() : undefined;
    }
  }
}
