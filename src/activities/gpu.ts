import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import {
  BackendRejectedError,
  BackendUnavailableError,
  TERMINAL_BACKEND_STATUSES,
  type BackendJob,
  type BackendSubmitRequest,
  type GenerationBackend,
} from '../backend/types';
import type { Db } from '../db/client';
import { applyWrite } from '../db/projection';
import { backendClientKey, type GenerationRequest, type GpuAttemptResult } from '../domain/generation';
import type { Logger } from '../lib/logger';
import { backendEventSignal } from '../workflows/messages';
import type { BackendWakeups } from './backend-wakeups';

export interface GpuActivityDeps {
  db: Db;
  backend: GenerationBackend;
  wakeups: BackendWakeups;
  client: Client;
  logger: Logger;
  /** Where the backend sends its callbacks (the API's /internal/backend/callbacks). */
  callbackUrl: string;
  /** The fallback when a callback is lost: how often the backend is asked for the job's status. */
  pollIntervalMs: number;
}

/** Heartbeat details: what a retried attempt needs to resume the same backend job instead of submitting a new one. */
interface GpuHeartbeat {
  backendJobId: string;
}

/**
 * The GPU slot. One running `runGeneration` is one backend job in flight: it submits, then holds its worker slot until
 * the backend job ends, waking on the job's callback (Postgres LISTEN) or on its poll timer, whichever comes first.
 */
export function createGpuActivities(deps: GpuActivityDeps) {
  const { db, backend, wakeups, client, callbackUrl, pollIntervalMs } = deps;

  async function submitOrResume(jobId: string, attempt: number, request: GenerationRequest): Promise<BackendJob> {
    const resumed = Context.current().info.heartbeatDetails as GpuHeartbeat | undefined;
    if (resumed?.backendJobId) return backend.getJob(resumed.backendJobId);
    const submission: BackendSubmitRequest = {
      client_key: backendClientKey(jobId, attempt),
      prompt: request.prompt,
      duration_seconds: request.duration_seconds,
      resolution: request.resolution,
      aspect_ratio: request.aspect_ratio,
      seed: request.seed,
      callback_url: callbackUrl,
    };
    return backend.submit(submission);
  }

  /** Marks the job running in the projection and tells the workflow which backend job this attempt is. */
  async function announceAccepted(jobId: string, attempt: number, job: BackendJob): Promise<void> {
    await applyWrite(db, {
      jobId,
      status: 'running',
      attempt,
      progress: job.progress,
      backendJobId: job.id,
      startedAt: new Date().toISOString(),
    });
    await client.workflow
      .getHandle(jobId)
      .signal(backendEventSignal, { attempt, type: 'accepted', backendJobId: job.id })
      .catch((err: unknown) => deps.logger.warn({ jobId, backendJobId: job.id, err }, 'could not signal acceptance'));
  }

  async function runGeneration({ jobId, attempt, request }: { jobId: string; attempt: number; request: GenerationRequest }): Promise<GpuAttemptResult> {
    const ctx = Context.current();
    const log = deps.logger.child({ jobId, workflowId: jobId, attempt });
    let job: BackendJob;
    try {
      job = await submitOrResume(jobId, attempt, request);
    } catch (err) {
      throw asActivityError(err);
    }
    log.info({ backendJobId: job.id, status: job.status }, 'backend job accepted');
    ctx.heartbeat({ backendJobId: job.id } satisfies GpuHeartbeat);
    await announceAccepted(jobId, attempt, job);

    // Heartbeat often enough to hear a cancellation and to stay alive; poll the backend at its own pace.
    const tickMs = Math.max(50, Math.min(pollIntervalMs, (ctx.info.heartbeatTimeoutMs ?? pollIntervalMs * 3) / 3));
    let lastPoll = Date.now();
    let progress = job.progress;
    try {
      while (!TERMINAL_BACKEND_STATUSES.has(job.status)) {
        const woken = await Promise.race([wakeups.wait(job.id, tickMs), ctx.cancelled]);
        ctx.heartbeat({ backendJobId: job.id } satisfies GpuHeartbeat);
        if (!woken && Date.now() - lastPoll < pollIntervalMs) continue;
        lastPoll = Date.now();
        try {
          job = await backend.getJob(job.id);
        } catch (err) {
          if (!(err instanceof BackendUnavailableError)) throw err;
          log.warn({ backendJobId: job.id, err: err.message }, 'backend poll failed; will poll again');
          continue;
        }
        if (job.progress > progress && !TERMINAL_BACKEND_STATUSES.has(job.status)) {
          progress = job.progress;
          await applyWrite(db, { jobId, status: 'running', attempt, progress });
        }
      }
    } catch (err) {
      if (err instanceof CancelledFailure) {
        const reason = ctx.cancellationDetails;
        if (reason?.workerShutdown) {
          // This dispatcher is stopping, not the job: the retry resumes the same backend job from the heartbeat.
          throw ApplicationFailure.retryable('the GPU dispatcher shut down; the backend job goes on', 'DispatcherShutdown');
        }
        if (!reason || reason.cancelRequested) {
          // The workflow has decided (user cancel, or a callback already ended it): abort a backend job still running.
          await backend.cancel(job.id).catch((e: unknown) => log.warn({ backendJobId: job.id, err: e }, 'backend cancel failed'));
        }
      }
      throw err;
    }
    log.info({ backendJobId: job.id, status: job.status }, 'backend job ended');
    return {
      backendJobId: job.id,
      status: job.status as GpuAttemptResult['status'],
      videoUrl: job.video_url,
      error: job.error ? { code: job.error.code, message: job.error.message } : null,
    };
  }

  return { runGeneration };
}

/** A 4xx is final for this request; anything else is left to the activity's retry policy. */
function asActivityError(err: unknown): unknown {
  if (err instanceof BackendRejectedError) {
    return ApplicationFailure.create({ type: 'BackendRejectedError', message: err.message, nonRetryable: true });
  }
  return err;
}
