import { Context } from '@temporalio/activity';
import type { Config } from '../config';
import type { Sql } from '../db/client';
import type { Logger } from '../lib/logger';
import { PRUNE_STEPS, retentionWindows } from '../retention/prune';

export interface PruneReport {
  /** Rows deleted per table. */
  deleted: Record<string, number>;
  /** Per step (named by its main table): batches run, the most rows of that table one batch deleted, time in them. */
  batches: Record<string, { count: number; largest: number; ms: number }>;
  tookMs: number;
}

/** What a heartbeat records: the step under way and where its scan stands, so a retried activity resumes there. */
interface PruneProgress {
  step: number;
  cursor?: string;
  report: PruneReport;
}

/**
 * The session settings of retention's own connection: a batch never waits long for a lock (nor holds one while it
 * waits), and a statement ends well within the heartbeat timeout, so a retried activity never overlaps the last one. Its
 * name tells the pruning apart in `pg_stat_activity`.
 */
export const RETENTION_SESSION = { application_name: 'videogen-retention', lock_timeout: '5s', statement_timeout: '15s' };

export interface RetentionDeps {
  /** A connection of its own, with RETENTION_SESSION's settings. */
  sql: Sql;
  config: Config;
  logger: Logger;
}

/**
 * Retention's one activity: every table's expired rows, deleted batch by batch (src/retention/prune.ts), each batch
 * followed by a heartbeat and a rest in which a cancellation ends it. The rest is paced on the batch: a run works
 * RETENTION_WORK_SHARE of its time, so on a loaded database, where batches take longer, it backs off as much.
 */
export function createRetentionActivities({ sql, config, logger }: RetentionDeps) {
  const windows = retentionWindows(config);
  const { batchSize, batchPauseMs, workShare } = config.retention;
  return {
    async pruneExpiredData(): Promise<PruneReport> {
      const ctx = Context.current();
      const began = Date.now();
      const resumed = ctx.info.heartbeatDetails as PruneProgress | undefined;
      const report: PruneReport = resumed?.report ?? { deleted: {}, batches: {}, tookMs: 0 };
      for (let i = resumed?.step ?? 0; i < PRUNE_STEPS.length; i++) {
        const step = PRUNE_STEPS[i];
        let cursor = (i === resumed?.step ? resumed.cursor : undefined) ?? step.start;
        for (;;) {
          const at = Date.now();
          const outcome = await step.batch(sql, windows, batchSize, cursor);
          for (const [table, n] of Object.entries(outcome.deleted)) report.deleted[table] = (report.deleted[table] ?? 0) + n;
          const batches = (report.batches[step.table] ??= { count: 0, largest: 0, ms: 0 });
          batches.count += 1;
          batches.ms += Date.now() - at;
          batches.largest = Math.max(batches.largest, outcome.rows);
          cursor = outcome.cursor;
          ctx.heartbeat(outcome.done ? { step: i + 1, report } : { step: i, cursor, report });
          // Rejects at once when the run was cancelled.
          await ctx.sleep(Math.max(batchPauseMs, Math.round((Date.now() - at) * (1 / workShare - 1))));
          if (outcome.done) break;
        }
      }
      report.tookMs += Date.now() - began;
      logger.info({ deleted: report.deleted, tookMs: report.tookMs }, 'expired data pruned');
      return report;
    },
  };
}
