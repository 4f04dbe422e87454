import { ApplicationFailure, CancelledFailure, Context } from '@temporalio/activity';
import type { Client } from '@temporalio/client';
import {
  BackendRejectedError,
  isJobNotFound,
  BackendUnavailableError,
  TERMINAL_BACKEND_STATUSES,
  type BackendJob,
  type BackendSubmitRequest,
  type GenerationBackend,
} from '../backend/types';
import type { Db } from '../db/client';
import { applyWrite } from '../db/projection';
import { backendClientKey, runTag, type GenerationRequest, type GpuAttemptResult } from '../domain/generation';
import type { Logger } from '../lib/logger';
import { timeInQueue } from '../lib/metrics';
import { backendEventSignal } from '../contracts/generation';
import type { BackendWakeups } from '../dispatch/backend-wakeups';

export interface GpuActivityDeps {
  db: Db;
  backend: GenerationBackend;
  /** async: submit, then wait for the callback or the poll; sync: one call that returns when the video is ready. */
  mode: 'async' | 'sync';
  wakeups: BackendWakeups;
  client: Client;
  logger: Logger;
  /** Where the backend sends its callbacks (the API's /internal/backend/callbacks). */
  callbackUrl: string;
  /** The fallback when a callback is lost: how often the backend is asked for the job's status. */
  pollIntervalMs: number;
  /** This dispatcher's Temporal worker identity, recorded on the jobs it runs. */
  dispatcherIdentity: string;
}

export interface GpuAttemptInput {
  jobId: string;
  attempt: number;
  /** The workflow run this attempt belongs to: its projection writes carry it. */
  runOpenedAt: string;
  /** For the time-in-queue metric. */
  tier: string;
  acceptedAt: string;
  request: GenerationRequest;
  expectedRunMs: number;
}

/** Heartbeat details: what a retried attempt needs to resume the same backend job instead of submitting a new one. */
interface GpuHeartbeat {
  backendJobId: string | null;
}

/**
 * The GPU slot. One running `runGeneration` is one backend job in flight: it submits, then holds its worker slot until
 * the backend job ends, waking on the job's callback (Postgres LISTEN) or on its poll timer, whichever comes first.
 */
export function createGpuActivities(deps: GpuActivityDeps) {
  const { db, backend, wakeups, client, callbackUrl, pollIntervalMs } = deps;

  function submission({ jobId, runOpenedAt, attempt, request }: GpuAttemptInput, withCallback: boolean): BackendSubmitRequest {
    return {
      client_key: backendClientKey(jobId, runOpenedAt, attempt),
      prompt: request.prompt,
      duration_seconds: request.duration_seconds,
      resolution: request.resolution,
      aspect_ratio: request.aspect_ratio,
      seed: request.seed,
      ...(withCallback ? { callback_url: callbackUrl } : {}),
    };
  }

  /** Marks the job running in the projection and tells the workflow which backend job this attempt is. */
  async function announceAccepted(input: GpuAttemptInput, backendJobId: string | null, progress: number) {
    const { jobId, attempt, runOpenedAt, expectedRunMs } = input;
    const now = Date.now();
    if (attempt === 1 && !Context.current().info.heartbeatDetails) timeInQueue.observe({ tier: input.tier }, (now - Date.parse(input.acceptedAt)) / 1000);
    await applyWrite(db, {
      jobId,
      runOpenedAt,
      status: 'running',
      attempt,
      progress,
      backendJobId,
      dispatcher: deps.dispatcherIdentity,
      startedAt: new Date(now).toISOString(),
      expectedDoneAt: new Date(now + expectedRunMs).toISOString(),
    });
    await client.workflow
      .getHandle(jobId)
      .signal(backendEventSignal, { run: runTag(runOpenedAt), attempt, type: 'accepted', backendJobId: backendJobId ?? '' })
      .catch((err: unknown) => deps.logger.warn({ jobId, backendJobId, err }, 'could not signal acceptance'));
  }

  function result(job: BackendJob): GpuAttemptResult {
    return {
      backendJobId: job.id,
      status: job.status as GpuAttemptResult['status'],
      videoUrl: job.video_url,
      error: job.error ? { code: job.error.code, message: job.error.message } : null,
    };
  }

  async function runAsync(input: GpuAttemptInput, log: Logger): Promise<GpuAttemptResult> {
    const ctx = Context.current();
    const resumed = ctx.info.heartbeatDetails as GpuHeartbeat | undefined;
    let job = await callBackend(() => (resumed?.backendJobId ? backend.getJob(resumed.backendJobId) : backend.submit(submission(input, true))), resumed?.backendJobId ?? undefined);
    log.info({ backendJobId: job.id, status: job.status, resumed: Boolean(resumed?.backendJobId) }, 'backend job accepted');
    ctx.heartbeat({ backendJobId: job.id } satisfies GpuHeartbeat);
    await announceAccepted(input, job.id, job.progress);

    // Heartbeat often enough to hear a cancellation and to stay alive; poll the backend at its own pace.
    const tickMs = Math.max(50, Math.min(pollIntervalMs, (ctx.info.heartbeatTimeoutMs ?? pollIntervalMs * 3) / 3));
    let lastPoll = Date.now();
    let progress = job.progress;
    try {
      while (!TERMINAL_BACKEND_STATUSES.has(job.status)) {
        // Wake for the heartbeat or when the next poll is due, whichever is sooner, so polls keep their interval.
        const untilPoll = lastPoll + pollIntervalMs - Date.now();
        const woken = await Promise.race([wakeups.wait(job.id, Math.max(1, Math.min(tickMs, untilPoll))), ctx.cancelled]);
        ctx.heartbeat({ backendJobId: job.id } satisfies GpuHeartbeat);
        if (!woken && Date.now() - lastPoll < pollIntervalMs) continue;
        lastPoll = Date.now();
        try {
          job = await backend.getJob(job.id);
        } catch (err) {
          if (isJobNotFound(err)) throw jobLost(job.id);
          if (!(err instanceof BackendUnavailableError)) throw err;
          log.warn({ backendJobId: job.id, err: err.message }, 'backend poll failed; will poll again');
          continue;
        }
        if (job.progress > progress && !TERMINAL_BACKEND_STATUSES.has(job.status)) {
          progress = job.progress;
          await applyWrite(db, { jobId: input.jobId, runOpenedAt: input.runOpenedAt, status: 'running', attempt: input.attempt, progress });
        }
      }
    } catch (err) {
      throw await onInterrupted(err, job.id, log);
    }
    log.info({ backendJobId: job.id, status: job.status }, 'backend job ended');
    return result(job);
  }

  /** Synchronous backends: one blocking call (idempotent by client key, so a retry re-attaches), heartbeating meanwhile. */
  async function runSync(input: GpuAttemptInput, log: Logger): Promise<GpuAttemptResult> {
    const ctx = Context.current();
    if (!backend.generate) throw ApplicationFailure.nonRetryable('this backend has no synchronous mode', 'BackendRejectedError');
    ctx.heartbeat({ backendJobId: null } satisfies GpuHeartbeat);
    await announceAccepted(input, null, 0);
    const beat = setInterval(() => ctx.heartbeat({ backendJobId: null } satisfies GpuHeartbeat), Math.max(50, (ctx.info.heartbeatTimeoutMs ?? 3000) / 3));
    try {
      const job = await Promise.race([callBackend(() => backend.generate!(submission(input, false), ctx.cancellationSignal)), ctx.cancelled]);
      log.info({ backendJobId: job.id, status: job.status }, 'backend job ended');
      return result(job);
    } catch (err) {
      throw await onInterrupted(err, null, log);
    } finally {
      clearInterval(beat);
    }
  }

  /** What an interrupted attempt throws, after aborting the backend job when the workflow asked for it. */
  async function onInterrupted(err: unknown, backendJobId: string | null, log: Logger): Promise<unknown> {
    if (!(err instanceof CancelledFailure)) return err;
    const reason = Context.current().cancellationDetails;
    if (reason?.workerShutdown) {
      // This dispatcher is stopping, not the job: the retry resumes the same backend job from the heartbeat.
      return ApplicationFailure.retryable('the GPU dispatcher shut down; the backend job goes on', 'DispatcherShutdown');
    }
    if (backendJobId && (!reason || reason.cancelRequested)) {
      // The workflow has decided (user cancel, or a callback already ended it): abort a backend job still running.
      await backend.cancel(backendJobId).catch((e: unknown) => log.warn({ backendJobId, err: e }, 'backend cancel failed'));
    }
    return err;
  }

  async function runGeneration(input: GpuAttemptInput): Promise<GpuAttemptResult> {
    const log = deps.logger.child({ jobId: input.jobId, workflowId: input.jobId, attempt: input.attempt });
    return deps.mode === 'sync' ? runSync(input, log) : runAsync(input, log);
  }

  return { runGeneration };
}

/**
 * The backend lost a job of ours (it answers 404 for the id it gave us): this attempt cannot go on, and retrying the same
 * look-up will not bring the job back. The workflow classifies it as a transient backend failure: a new attempt, with a
 * new client key, submits a new backend job.
 */
function jobLost(backendJobId: string): ApplicationFailure {
  return ApplicationFailure.create({ type: 'BackendJobLost', message: `the backend no longer knows job ${backendJobId}`, nonRetryable: true });
}

/** A 4xx is final for this request; anything else is left to the activity's retry policy. `lookingUp`: the job asked for. */
async function callBackend<T>(call: () => Promise<T>, lookingUp?: string): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (lookingUp !== undefined && isJobNotFound(err)) throw jobLost(lookingUp);
    if (err instanceof BackendRejectedError) {
      throw ApplicationFailure.create({ type: 'BackendRejectedError', message: err.message, nonRetryable: true });
    }
    throw err;
  }
}
