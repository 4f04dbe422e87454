import { ActivityFailure, ApplicationFailure, isCancellation, TimeoutFailure, type ActivityOptions } from '@temporalio/workflow';
import type { GenerationInput, GpuAttemptResult } from '../domain/generation';
import { fromBackendErrorCode, generationError, type GenerationError } from '../domain/generation-errors';
import { GENERATION_TIMEOUT_FAILURE, INSUFFICIENT_CREDITS_FAILURE, type BackendEvent } from '../contracts/generation';

/** How one generation attempt ended, from whichever source spoke first: the GPU activity, a callback, a deadline or a cancel. */
export type AttemptOutcome =
  | { kind: 'succeeded'; backendJobId: string; videoUrl: string }
  | { kind: 'failed'; backendJobId: string | null; error: GenerationError }
  | { kind: 'canceled' };

/** Margin past the workflow's own running deadline, so the workflow's timer (with its last poll) always fires first. */
const GPU_TIMEOUT_MARGIN_MS = 60_000;

export function gpuActivityOptions({ userId, settings }: GenerationInput, attempt: number): ActivityOptions {
  return {
    // A stable id operators can name: `temporal activity reset --activity-id gpu-attempt-1 …`
    activityId: `gpu-attempt-${attempt}`,
    taskQueue: settings.gpuTaskQueue,
    // Waiting in the backlog for a slot past this fails the job with queue_timeout (the task leaves the backlog).
    scheduleToStartTimeout: settings.maxQueueMs,
    startToCloseTimeout: settings.maxRunMs + GPU_TIMEOUT_MARGIN_MS,
    heartbeatTimeout: settings.heartbeatTimeoutMs,
    // Infrastructure failures (backend 5xx, a dispatcher that died) retry the same backend job; a 4xx does not.
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 10, nonRetryableErrorTypes: ['BackendRejectedError'] },
    // Fair dispatch across users, weighted by tier. Never a priority key: those are strict, and would starve the free tier.
    priority: { fairnessKey: userId, fairnessWeight: settings.fairnessWeight, priorityKey: settings.priorityKey },
  };
}

export function outcomeOfResult(result: GpuAttemptResult): AttemptOutcome {
  if (result.status === 'succeeded' && result.videoUrl) {
    return { kind: 'succeeded', backendJobId: result.backendJobId, videoUrl: result.videoUrl };
  }
  if (result.status === 'canceled') return { kind: 'canceled' };
  const error = result.error ?? { code: 'internal_error', message: 'the backend reported no error' };
  return { kind: 'failed', backendJobId: result.backendJobId, error: generationError(fromBackendErrorCode(error.code), error.message) };
}

export function outcomeOfEvent(event: BackendEvent): AttemptOutcome {
  return outcomeOfResult({
    backendJobId: event.backendJobId,
    status: event.type === 'succeeded' ? 'succeeded' : event.type === 'canceled' ? 'canceled' : 'failed',
    videoUrl: event.videoUrl ?? null,
    error: event.error ?? null,
  });
}

export function outcomeOfFailure(failure: unknown): AttemptOutcome {
  if (isCancellation(failure)) return { kind: 'canceled' };
  const cause = failure instanceof ActivityFailure ? failure.cause : failure;
  if (cause instanceof TimeoutFailure && cause.timeoutType === 'SCHEDULE_TO_START') {
    return { kind: 'failed', backendJobId: null, error: generationError('queue_timeout', 'no GPU slot became free in time') };
  }
  if (cause instanceof TimeoutFailure) {
    return { kind: 'failed', backendJobId: null, error: generationError('generation_timeout', 'the generation ran past its deadline') };
  }
  if (cause instanceof ApplicationFailure && cause.type === GENERATION_TIMEOUT_FAILURE) {
    return { kind: 'failed', backendJobId: null, error: generationError('generation_timeout', cause.message) };
  }
  if (cause instanceof ApplicationFailure && cause.type === INSUFFICIENT_CREDITS_FAILURE) {
    return { kind: 'failed', backendJobId: null, error: generationError('insufficient_credits', cause.message) };
  }
  const rejected = cause instanceof ApplicationFailure && cause.type === 'BackendRejectedError';
  const message = cause instanceof Error ? cause.message : 'the GPU activity failed';
  return { kind: 'failed', backendJobId: null, error: generationError(rejected ? 'invalid_input' : 'backend_unavailable', message) };
}

/** The deadline outcome: the backend's last word if it had just finished, a typed timeout otherwise. */
export function outcomeOfOverdue(last: GpuAttemptResult | undefined): AttemptOutcome {
  if (last && (last.status === 'succeeded' || last.status === 'failed')) return outcomeOfResult(last);
  return { kind: 'failed', backendJobId: last?.backendJobId ?? null, error: generationError('generation_timeout', 'the generation ran past its deadline') };
}
