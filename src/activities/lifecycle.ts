import { TERMINAL_BACKEND_STATUSES, type GenerationBackend } from '../backend/types';
import { ensureRunReservation, InsufficientCreditsError, settleCredits } from '../credits/ledger';
import type { Db } from '../db/client';
import type { GenerationRequest, GpuAttemptResult } from '../domain/generation';
import { creditsFor } from '../domain/pricing';

export interface RunReservationInput {
  jobId: string;
  userId: string;
  /** What the job costs is the request's price (src/domain/pricing.ts), as quoted at submit. */
  request: Pick<GenerationRequest, 'duration_seconds' | 'resolution'>;
  runOpenedAt: string;
}

/** Activities of the generation task queue for a job's ending: deadlines, backend cancellation, credits. */
export function createLifecycleActivities({ db, backend }: { db: Db; backend: GenerationBackend }) {
  return {
    /**
     * A running attempt passed its deadline: poll the backend once more (it may have just finished), and cancel the
     * backend job if it has not. Returns the job's last word.
     */
    async finalizeOverdueAttempt({ backendJobId }: { backendJobId: string }): Promise<GpuAttemptResult> {
      let job = await backend.getJob(backendJobId);
      if (!TERMINAL_BACKEND_STATUSES.has(job.status)) job = await backend.cancel(backendJobId);
      return {
        backendJobId,
        status: job.status === 'succeeded' || job.status === 'failed' ? job.status : 'canceled',
        videoUrl: job.video_url,
        error: job.error ? { code: job.error.code, message: job.error.message } : null,
      };
    },

    /** Aborts a backend job the workflow no longer wants; a job already ended is left as it is. */
    async cancelBackendJob({ backendJobId }: { backendJobId: string }): Promise<void> {
      await backend.cancel(backendJobId);
    },

    /** A run's first step: the job must hold a reservation (an operator-restarted run reserves anew). */
    async ensureRunReservation({ jobId, userId, request, runOpenedAt }: RunReservationInput): Promise<{ ok: true } | { ok: false; message: string }> {
      try {
        await ensureRunReservation(db, { jobId, userId, credits: creditsFor(request) }, runOpenedAt);
        return { ok: true };
      } catch (err) {
        if (err instanceof InsufficientCreditsError) return { ok: false, message: err.message };
        throw err;
      }
    },

    /** Captures the job's reserved credits on success, releases them otherwise — once, whoever retries. */
    async settleJobCredits({ jobId, succeeded }: { jobId: string; succeeded: boolean }): Promise<string> {
      return settleCredits(db, jobId, succeeded ? 'capture' : 'release');
    },
  };
}
