import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import type { Sql } from '../db/client';
import { unstartedJobIds } from '../db/submissions';
import type { GenerationInput } from '../domain/generation';
import type { Logger } from '../lib/logger';
import { keptSubmits, relayWaiting } from '../lib/metrics';
import { isTemporalUnreachable, startGeneration } from '../contracts/generation-start';

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

export interface StartRelayDeps {
  /** Starts the job's workflow, idempotently (src/contracts/generation-start.ts startGeneration). */
  start: (input: GenerationInput) => Promise<void>;
  /** Which of these jobs are still queued and never opened by a run (src/db/submissions.ts unstartedJobIds). */
  unstarted: (jobIds: string[]) => Promise<Set<string>>;
  logger: Logger;
  maxJobs: number;
}

export function createStartRelay({ start, unstarted, logger, maxJobs }: StartRelayDeps) {
  const kept = new Map<string, GenerationInput>();
  let unreachableSince: number | null = null;
  let retryMs = FIRST_RETRY_MS;
  let timer: NodeJS.Timeout | undefined;
  let draining = false;
  let closed = false;
  let overflowed = 0;

  function markUnreachable() {
    if (unreachableSince !== null) return;
    unreachableSince = Date.now();
    logger.warn('Temporal cannot be reached: submits are kept and their workflows started once it answers');
  }

  function wake(delayMs: number) {
    if (closed || draining || timer || kept.size === 0) return;
    timer = setTimeout(() => {
      timer = undefined;
      void drain();
    }, delayMs);
    timer.unref(); // kept jobs never hold a stopping process: the reconciler starts them
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
        // A job another path started, or that ended, is not started again.
        const waiting = await unstarted(batch.map((input) => input.jobId));
        const outcomes = await Promise.allSettled(batch.map((input) => (waiting.has(input.jobId) ? start(input) : undefined)));
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
          markUnreachable();
          break;
        }
        if (unreachableSince !== null) logger.warn({ unreachableForMs: Date.now() - unreachableSince, waiting: kept.size }, 'Temporal answers again; starting the kept jobs');
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
      if (unreachable) markUnreachable();
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

/** An API process's relay: it starts through Temporal and reads from Postgres which kept jobs still wait. */
export function createServiceStartRelay({ client, config, sql, logger }: { client: Client; config: Config; sql: Sql; logger: Logger }): StartRelay {
  return createStartRelay({
    start: (input) => startGeneration(client, config, input),
    unstarted: (jobIds) => unstartedJobIds(sql, jobIds),
    logger,
    maxJobs: config.api.startRelayMaxJobs,
  });
}
