import { Context } from '@temporalio/activity';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import { and, asc, eq, isNull, lt, sql } from 'drizzle-orm';
import { undoReservation } from '../credits/ledger';
import type { Db } from '../db/client';
import { applyWrite } from '../db/projection';
import { creditLedger, generations } from '../db/schema';
import { SETTLEMENT_KEY_SUFFIX } from '../db/ledger-keys';
import { listStuckGenerations } from '../db/stuck';
import { readUnstartedJob } from '../db/submissions';
import { isTemporalUnreachable, startGeneration, unstartedJobInput } from '../contracts/generation-start';
import type { Config } from '../config';
import { endingWrite, type GenerationState } from '../domain/generation';
import { generationError } from '../domain/generation-errors';
import type { Logger } from '../lib/logger';
import type { GenerationEnding } from './ending';
import { SA_BACKEND_JOB_ID, SA_STATUS } from '../domain/search-attributes';

export interface ReconcileReport {
  checked: number;
  repaired: number;
  missingWorkflows: number;
  /** Kept submits (queued, never opened, no workflow: Temporal was away, or their API died before the start), started. */
  startedSubmissions: number;
  /** Kept submits whose start Temporal refused (it answered): left queued, tried again next pass. */
  unstartable: number;
  stuck: number;
  orphanReservationsReleased: number;
}

/**
 * The reconciler's work: Temporal is the source of truth, the projection is what clients read. Every non-terminal row
 * that has not moved for a while is compared with its workflow and repaired; workflows ended from outside (an operator's
 * terminate) get their terminal row and their credits released; admitted submits whose workflow never started are
 * started, with the input rebuilt from their row (the durable path of the submit outbox, src/api/start-relay.ts).
 */
export interface ReconcileDeps {
  db: Db;
  client: Client;
  config: Config;
  logger: Logger;
  /** The job's one ending (src/activities/ending.ts), which a workflow ended from outside never ran. */
  endGeneration: (ending: GenerationEnding) => Promise<boolean>;
}

const TEMPORAL_CALL_MS = 5_000;

function activityContext(): Context | undefined {
  try {
    return Context.current();
  } catch {
    return undefined;
  }
}

export function createReconcileActivities({ db, client, config, logger, endGeneration }: ReconcileDeps) {
  // One slow answer must not stall the pass.
  const withDeadline = <T>(call: () => Promise<T>) => client.withDeadline(Date.now() + TEMPORAL_CALL_MS, call);

  async function repairFromWorkflow(jobId: string): Promise<'repaired' | 'in_step' | 'missing'> {
    const handle = client.workflow.getHandle(jobId);
    let description;
    try {
      description = await withDeadline(() => handle.describe());
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return 'missing';
      throw err;
    }
    const status = description.status.name;
    let moved: boolean;
    if (status === 'RUNNING') {
      // The search attributes say where a running job is, without a query (which would wait on a worker that may be down).
      const running = description.typedSearchAttributes.get(SA_STATUS) === 'running';
      const backendJobId = description.typedSearchAttributes.get(SA_BACKEND_JOB_ID) ?? null;
      moved = running && (await applyWrite(db, { jobId, status: 'running', attempt: 0, progress: 0, backendJobId }));
    } else if (status === 'COMPLETED') {
      // The workflow ran its ending before it completed: only the row can have missed the ending's write since.
      const state = (await withDeadline(() => handle.result())) as GenerationState;
      moved = await applyWrite(db, endingWrite(state, (description.closeTime ?? new Date()).toISOString()));
    } else {
      // Terminated, timed out or failed as a workflow: it will never end the job itself. The reconciler runs the ending
      // the workflow would have run (credits released, the terminal row, the user notified), not a copy of it.
      const [row] = await db.select().from(generations).where(eq(generations.id, jobId));
      if (!row) return 'in_step'; // deleted meanwhile (retention): nothing left to end
      const canceled = status === 'CANCELLED';
      const endedAt = (description.closeTime ?? new Date()).toISOString();
      moved = await endGeneration({
        write: {
          jobId,
          status: canceled ? 'canceled' : 'failed',
          attempt: 0,
          progress: 0,
          error: generationError(canceled ? 'canceled_by_user' : 'backend_unavailable', `the job's workflow ended as ${status.toLowerCase()}`),
          completedAt: endedAt,
        },
        userId: row.userId,
        webhookUrl: (row.params as { webhook_url?: string | null }).webhook_url ?? null,
        endedAt,
      });
    }
    return moved ? 'repaired' : 'in_step';
  }

  /** Starts a kept submit's workflow (idempotent): 'gone' when it has meanwhile started or ended, or is another pool's. */
  async function startUnstarted(jobId: string): Promise<'started' | 'gone' | 'refused'> {
    const job = await readUnstartedJob(db, jobId);
    // Only jobs admitted to this deployment's pool: another deployment on the same database starts its own.
    if (!job || job.gpuTaskQueue !== config.dispatch.pool) return 'gone';
    try {
      await startGeneration(client, config, unstartedJobInput(config, job));
      return 'started';
    } catch (err) {
      if (isTemporalUnreachable(err)) throw err; // the activity retries
      logger.error({ err, jobId }, 'Temporal refused to start a kept submit; it stays queued for the next pass');
      return 'refused';
    }
  }

  return {
    async reconcileProjection({ quietForMs, limit }: { quietForMs: number; limit: number }): Promise<ReconcileReport> {
      const report: ReconcileReport = { checked: 0, repaired: 0, missingWorkflows: 0, startedSubmissions: 0, unstartable: 0, stuck: 0, orphanReservationsReleased: 0 };
      const quietSince = new Date(Date.now() - quietForMs);
      // Alive (the SDK sends at most one heartbeat per 0.8 of the heartbeat timeout however often this is called); a
      // direct call outside an activity (a test's) has no one to tell.
      const activity = activityContext();
      const beat = () => activity?.heartbeat();
      beat();
      // Longest-quiet first, so a large backlog of healthy queued jobs cannot keep a diverged row from its turn.
      const rows = await db
        .select({ id: generations.id })
        .from(generations)
        .where(and(lt(generations.statusRank, 2), lt(generations.updatedAt, quietSince)))
        .orderBy(asc(generations.updatedAt))
        .limit(limit);
      for (const { id } of rows) {
        beat();
        report.checked += 1;
        const outcome = await repairFromWorkflow(id);
        if (outcome === 'repaired') report.repaired += 1;
        if (outcome === 'missing') {
          report.missingWorkflows += 1;
          // Admitted (row, key, credits written) but never started, and quiet for two intervals: a promise, kept now.
          const started = await startUnstarted(id);
          if (started === 'started') report.startedSubmissions += 1;
          if (started === 'refused') report.unstartable += 1;
        }
      }
      // A reservation with no projection row and no workflow (admission writes both together, and a kept submit keeps its
      // row, so this is a workflow's own reservation whose row was lost, or an earlier build's leftover). One that was
      // settled had a job that ran (and whose row retention has since deleted).
      const orphans = await db
        .select({ jobId: creditLedger.jobId })
        .from(creditLedger)
        .leftJoin(generations, eq(generations.id, creditLedger.jobId))
        .where(
          and(
            eq(creditLedger.kind, 'reserve'),
            isNull(generations.id),
            lt(creditLedger.createdAt, quietSince),
            sql`not exists (select 1 from credit_ledger s where s.entry_key = ${creditLedger.entryKey} || ${SETTLEMENT_KEY_SUFFIX}::text)`,
          ),
        )
        .limit(limit);
      for (const { jobId } of orphans) {
        beat();
        if (!jobId) continue;
        const exists = await withDeadline(() => client.workflow.getHandle(jobId).describe()).then(() => true, (err: unknown) => (err instanceof WorkflowNotFoundError ? false : Promise.reject(err)));
        if (exists) continue;
        await db.transaction((tx) => undoReservation(tx, jobId));
        report.orphanReservationsReleased += 1;
      }
      report.stuck = (await listStuckGenerations(db)).length;
      if (report.repaired || report.missingWorkflows || report.unstartable || report.orphanReservationsReleased || report.stuck) {
        logger.warn({ ...report }, 'reconciler found divergence');
      }
      return report;
    },
  };
}

