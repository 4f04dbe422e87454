import { z } from 'zod';
import type { Sql } from '../db/client';
import type { Logger } from '../lib/logger';
import { everyInTurn } from '../lib/periodic';
import { reportBackendCapacity } from './capacity';

/** A backend that can say how many jobs it runs at once. Optional: a backend that cannot leaves the number to the operator. */
export interface BackendCapacitySource {
  /** The backend's capacity now, or null when it does not say. */
  capacity(): Promise<number | null>;
}

const reportedCapacity = z.object({ capacity: z.number().int().min(1) });

/** The simulator's (and any backend speaking its admin API) own number, from GET /admin/config. */
export class HttpBackendCapacity implements BackendCapacitySource {
  constructor(
    private readonly baseUrl: string,
    private readonly timeoutMs: number,
  ) {}

  async capacity(): Promise<number | null> {
    const res = await fetch(`${this.baseUrl.replace(/\/+$/, '')}/admin/config`, { signal: AbortSignal.timeout(this.timeoutMs) });
    if (!res.ok) return null;
    const parsed = reportedCapacity.safeParse(await res.json());
    return parsed.success ? parsed.data.capacity : null;
  }
}

/** Asks the backend every `everyMs` and records its number when it changed; a failed ask changes nothing. */
export function watchBackendCapacity({ sql, pool, source, everyMs, logger }: { sql: Sql; pool: string; source: BackendCapacitySource; everyMs: number; logger: Logger }) {
  return everyInTurn(
    everyMs,
    async () => {
      const capacity = await source.capacity();
      if (capacity !== null && (await reportBackendCapacity(sql, pool, capacity))) {
        logger.info({ pool, capacity }, 'the backend reported a new GPU capacity');
      }
    },
    { now: true, onError: (err) => logger.debug({ err }, 'could not read the backend capacity') },
  );
}
