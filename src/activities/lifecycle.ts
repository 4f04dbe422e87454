import { endOverdueJob, type GenerationBackend } from '../backend/types';
import { ensureRunReservation, InsufficientCreditsError, settleCredits } from '../credits/ledger';
import { sql } from 'drizzle-orm';
import type { Db } from '../db/client';
import { attemptStopKey, BACKEND_JOB_CHANNEL } from '../dispatch/backend-wakeups';
import { openRun } from '../db/projection';
import type { GenerationInput, GenerationRequest, GpuAttemptResult } from '../domain/generation';
import { creditsFor, type PriceRules } from '../domain/pricing';

export interface RunReservationInput {
  jobId: string;
  userId: string;
  /** What the job costs is the request's price (src/domain/pricing.ts), as quoted at submit. */
  request: Pick<GenerationRequest, 'duration_seconds' | 'resolution' | 'priority'>;
  runOpenedAt: string;
}

/** Activities of the generation task queue for a job's ending: deadlines, backend cancellation, credits. */
export function createLifecycleActivities({ db, backend, pricing }: { db: Db; backend: GenerationBackend; pricing: PriceRules }) {
  /** A run's first step: the job must hold a reservation (an operator-restarted run reserves anew). */
  async function reserveForRun({ jobId, userId, request, runOpenedAt }: RunReservationInput): Promise<{ ok: true } | { ok: false; message: string }> {
    try {
      await ensureRunReservation(db, { jobId, userId, credits: creditsFor(request, pricing) }, runOpenedAt);
      return { ok: true };
    } catch (err) {
      if (err instanceof InsufficientCreditsError) return { ok: false, message: err.message };
      throw err;
    }
  }

  return {
    /**
     * A running attempt passed its deadline: poll the backend once more (it may have just finished), and cancel the
     * backend job if it has not. Returns the job's last word.
     */
    async finalizeOverdueAttempt({ backendJobId }: { backendJobId: string }): Promise<GpuAttemptResult> {
      const job = await endOverdueJob(backend, backendJobId);
      return {
        backendJobId,
        status: job.status === 'succeeded' || job.status === 'failed' ? job.status : 'canceled',
        videoUrl: job.video_url,
        error: job.error ? { code: job.error.code, message: job.error.message } : null,
      };
    },

    /**
     * The workflow no longer wants attempt N (canceled, or past its deadline): wakes the GPU activity running it, which
     * aborts its backend job and frees its slot, and aborts the backend job from here too, in case that dispatcher is gone.
     */
    async stopAttempt({ jobId, attempt, backendJobId }: { jobId: string; attempt: number; backendJobId: string | null }): Promise<void> {
      await db.execute(sql`select pg_notify(${BACKEND_JOB_CHANNEL}, ${attemptStopKey(jobId, attempt)})`);
      if (backendJobId) await backend.cancel(backendJobId);
    },

    /** Aborts a backend job the workflow no longer wants; a job already ended is left as it is. */
    async cancelBackendJob({ backendJobId }: { backendJobId: string }): Promise<void> {
      await backend.cancel(backendJobId);
    },

    /** The reservation step of a run begun before the lean run (LEAN_RUN_PATCH), which replays it as an activity. */
    ensureRunReservation: reserveForRun,

    /** A run's opening, as one local activity: its projection row for this run, then its credit reservation. */
    async openFundedRun({ input, runOpenedAt }: { input: GenerationInput; runOpenedAt: string }): Promise<{ ok: true } | { ok: false; message: string }> {
      await openRun(db, input, runOpenedAt);
      const { duration_seconds, resolution, priority } = input.request;
      return reserveForRun({ jobId: input.jobId, userId: input.userId, request: { duration_seconds, resolution, ...(priority === undefined ? {} : { priority }) }, runOpenedAt });
    },

    /** Captures the job's reserved credits on success, releases them otherwise — once, whoever retries. */
    async settleJobCredits({ jobId, succeeded }: { jobId: string; succeeded: boolean }): Promise<string> {
      return settleCredits(db, jobId, succeeded ? 'capture' : 'release');
    },
  };
}
