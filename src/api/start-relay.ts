import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import type { Sql } from '../db/client';
import type { GenerationInput } from '../domain/generation';
import type { Logger } from '../lib/logger';
import { keptSubmits, relayWaiting } from '../lib/metrics';
import { isTemporalUnreachable, startGeneration } from './generation-start';

/**
 * The fast path of the submit outbox: a submit whose admission committed while Temporal could not be reached is kept
 * (its row, key, reservation and queue entry stay, and it reads `queued`), and this relay starts its workflow — same id,
 * same input — from the process that accepted it, oldest first, once Temporal answers again. It holds at most
 * `maxJobs`; past that, and when this process dies, the reconciler starts any quiet queued row whose workflow is missing
 * (the durable path). Every start is idempotent, so the two paths, and a replay of the submit, may race harmlessly.
 */
export type StartRelay = ReturnType<typeof createStartRelay>;

const FIRST_RETRY_MS = 200;
const MAX_RETRY_MS = 2_000;
/** Starts in flight at once while Temporal answers; while it does not, one kept job at a time probes it. */
const BATCH = 8;

export function createStartRelay({ client, config, sql, logger, maxJobs }: { client: Client; config: Config; sql: Sql; logger: Logger; maxJobs: number }) {
  const kept = new Map<string, GenerationInput>();
  let unreachableSince: number | null = null;
  let retryMs = FIRST_RETRY_MS;
  let timer: NodeJS.Timeout | undefined;
  let draining = false;
  let closed = false;
  let overflowed = 0;

  function wake(delayMs: number) {
    if (closed || draining || timer || kept.size === 0) return;
    timer = setTimeout(() => {
      timer = undefined;
      void drain();
    }, delayMs);
  }

  /** The ids still queued and never opened by a run: a job another path started, or that ended, is not started again. */
  async function stillUnstarted(ids: string[]): Promise<Set<string>> {
    const rows = await sql<{ id: string }[]>`select id from generations where id = any(${ids}) and status = 'queued' and run_opened_at is null`;
    return new Set(rows.map((r) => r.id));
  }

  async function drain() {
    draining = true;
    try {
      while (!closed && kept.size > 0) {
        const batch: GenerationInput[] = [];
        for (const input of kept.values()) {
          if (batch.length === (unreachableSince === null ? BATCH : 1)) break;
          batch.push(input);
        }
        const unstarted = await stillUnstarted(batch.map((input) => input.jobId));
        const outcomes = await Promise.allSettled(batch.map((input) => (unstarted.has(input.jobId) ? startGeneration(client, config, input) : undefined)));
        let unreachable = false;
        outcomes.forEach((outcome, i) => {
          const { jobId } = batch[i];
          if (outcome.status === 'rejected' && isTemporalUnreachable(outcome.reason)) unreachable = true;
          else {
            kept.delete(jobId);
            relayWaiting.set(kept.size);
            // A refusal is not dropped for good: the row stays queued and the reconciler tries again every pass.
            if (outcome.status === 'rejected') logger.error({ err: outcome.reason, jobId }, 'Temporal refused to start a kept job; left to the reconciler');
          }
        });
        if (unreachable) {
          unreachableSince ??= Date.now();
          break;
        }
        if (unreachableSince !== null) logger.info({ unreachableForMs: Date.now() - unreachableSince, waiting: kept.size }, 'Temporal answers again; starting kept jobs');
        unreachableSince = null;
        retryMs = FIRST_RETRY_MS;
      }
    } catch (err) {
      // Postgres did not answer the check: try again later, like Temporal.
      logger.warn({ err }, 'the start relay could not read its kept jobs');
    } finally {
      draining = false;
    }
    if (kept.size > 0) {
      wake(retryMs);
      retryMs = Math.min(MAX_RETRY_MS, retryMs * 2);
    }
  }

  return {
    /** True from a start that failed for want of Temporal until one succeeds: submits then go straight to the relay. */
    get temporalUnreachable(): boolean {
      return unreachableSince !== null;
    },
    /** Kept jobs waiting in this process. */
    get size(): number {
      return kept.size;
    },
    /**
     * Keeps a job whose start could not reach Temporal (`unreachable`: this caller just saw it fail). Returns false when
     * the relay is full: the job is no less kept — the reconciler starts it.
     */
    keep(input: GenerationInput, { unreachable = false }: { unreachable?: boolean } = {}): boolean {
      if (unreachable) unreachableSince ??= Date.now();
      keptSubmits.inc();
      if (!kept.has(input.jobId)) {
        if (kept.size >= maxJobs) {
          if (overflowed++ % 1_000 === 0) logger.warn({ maxJobs, overflowed }, 'start relay full; kept jobs past it are left to the reconciler');
          return false;
        }
        kept.set(input.jobId, input);
        relayWaiting.set(kept.size);
      }
      wake(retryMs);
      return true;
    },
    /** Stops relaying; jobs still kept are started by the reconciler. */
    close() {
      closed = true;
      clearTimeout(timer);
      if (kept.size > 0) logger.warn({ waiting: kept.size }, 'API stopping with kept jobs not yet started; the reconciler will start them');
    },
  };
}
