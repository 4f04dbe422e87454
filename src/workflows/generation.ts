import {
  ActivityFailure,
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  log,
  proxyActivities,
  setHandler,
  upsertSearchAttributes,
  type ActivityOptions,
} from '@temporalio/workflow';
import type * as gpuActivities from '../activities/gpu';
import type * as projectionActivities from '../activities/projection';
import type { GenerationInput, GenerationState, GpuAttemptResult } from '../domain/generation';
import { classifyError, fromBackendErrorCode, generationError, type GenerationError } from '../domain/generation-errors';
import { assertTransition, isTerminal, type GenerationStatus } from '../domain/generation-state';
import { SA_BACKEND_JOB_ID, SA_STATUS } from '../domain/search-attributes';
import { backendEventSignal, cancelGenerationSignal, generationStateQuery, type BackendEvent } from './messages';

type ProjectionActivities = ReturnType<typeof projectionActivities.createProjectionActivities>;
type GpuActivities = ReturnType<typeof gpuActivities.createGpuActivities>;

// Projection writes must land eventually: retried without limit, each one idempotent.
const projection = proxyActivities<ProjectionActivities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '500ms', maximumInterval: '30s' },
});

/** How one generation attempt ended, from whichever source spoke first: the GPU activity or a backend callback. */
type AttemptOutcome =
  | { kind: 'succeeded'; backendJobId: string; videoUrl: string }
  | { kind: 'failed'; backendJobId: string | null; error: GenerationError }
  | { kind: 'canceled' };

/**
 * One video generation, from acceptance to a terminal state. Holds a GPU slot only through the GPU activity, which the
 * `gpu` task queue dispatches fairly by user (Temporal fairness keys, weighted by tier).
 */
export async function generationWorkflow(input: GenerationInput): Promise<GenerationState> {
  const { jobId, settings } = input;
  const state: GenerationState = { jobId, status: 'queued', attempt: 0, backendJobId: null, videoUrl: null, error: null };
  /** Terminal backend events by attempt, as they arrive by signal. */
  const terminalEvents = new Map<number, BackendEvent>();
  let cancelRequested = false;

  setHandler(generationStateQuery, () => state);
  setHandler(cancelGenerationSignal, () => {
    if (!isTerminal(state.status)) cancelRequested = true;
  });
  setHandler(backendEventSignal, (event) => {
    // Events of another attempt, or after the end, are stale: ignored.
    if (event.attempt !== state.attempt || isTerminal(state.status)) return;
    if (event.type === 'accepted' || event.type === 'started') {
      markRunning(event.backendJobId);
    } else if (!terminalEvents.has(event.attempt)) {
      terminalEvents.set(event.attempt, event);
    }
  });

  function markRunning(backendJobId: string): void {
    if (state.status === 'queued') transition('running');
    if (state.backendJobId !== backendJobId) {
      state.backendJobId = backendJobId;
      upsertSearchAttributes([{ key: SA_BACKEND_JOB_ID, value: backendJobId }]);
    }
  }

  function transition(to: GenerationStatus): void {
    assertTransition(state.status, to);
    state.status = to;
    upsertSearchAttributes([{ key: SA_STATUS, value: to }]);
  }

  await projection.recordQueued(input);

  for (;;) {
    state.attempt += 1;
    const outcome = await runAttempt(state.attempt);
    if (outcome.kind === 'failed' && classifyError(outcome.error.code).retryAttempt && state.attempt < settings.maxAttempts) {
      log.info('generation attempt failed, retrying', { jobId, attempt: state.attempt, code: outcome.error.code });
      const backoff = settings.retryBackoffMs * 2 ** (state.attempt - 1);
      if (await condition(() => cancelRequested, backoff)) return finish({ kind: 'canceled' });
      continue;
    }
    return finish(outcome);
  }

  /** Runs attempt N on a GPU slot and waits for the first terminal word on it: activity result, callback or cancel. */
  async function runAttempt(attempt: number): Promise<AttemptOutcome> {
    const gpu = proxyActivities<GpuActivities>(gpuActivityOptions(input));
    const scope = new CancellationScope();
    const onGpu = scope.run(() => gpu.runGeneration({ jobId, attempt, request: input.request }));
    onGpu.catch(() => undefined); // settled below, or abandoned once another source decided the outcome

    let result: GpuAttemptResult | undefined;
    let failure: unknown;
    onGpu.then(
      (r) => (result = r),
      (e) => (failure = e ?? new Error('GPU activity failed')),
    );
    await condition(() => result !== undefined || failure !== undefined || terminalEvents.has(attempt) || cancelRequested);

    if (result) return outcomeOfResult(result);
    const event = terminalEvents.get(attempt);
    if (event) {
      scope.cancel(); // the backend has finished: free the GPU slot now
      return outcomeOfEvent(event);
    }
    if (cancelRequested) {
      scope.cancel(); // queued: the task leaves the backlog; running: the activity aborts the backend job
      await onGpu.catch(() => undefined);
      return { kind: 'canceled' };
    }
    return outcomeOfFailure(failure);
  }

  async function finish(outcome: AttemptOutcome): Promise<GenerationState> {
    const completedAt = new Date().toISOString();
    switch (outcome.kind) {
      case 'succeeded':
        markRunning(outcome.backendJobId);
        state.videoUrl = outcome.videoUrl;
        transition('succeeded');
        break;
      case 'failed':
        state.error = outcome.error;
        transition(classifyError(outcome.error.code).status);
        break;
      case 'canceled':
        state.error = generationError('canceled_by_user', 'the generation was canceled');
        transition('canceled');
        break;
    }
    await projection.recordTransition({
      jobId,
      status: state.status,
      attempt: state.attempt,
      progress: state.status === 'succeeded' ? 1 : 0,
      backendJobId: state.backendJobId,
      videoUrl: state.videoUrl,
      error: state.error,
      completedAt,
    });
    return state;
  }
}

function gpuActivityOptions({ userId, settings }: GenerationInput): ActivityOptions {
  return {
    taskQueue: settings.gpuTaskQueue,
    startToCloseTimeout: settings.maxRunMs,
    heartbeatTimeout: settings.heartbeatTimeoutMs,
    // Infrastructure failures (backend 5xx, a dispatcher that died) retry the same backend job; a 4xx does not.
    retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s', maximumAttempts: 10, nonRetryableErrorTypes: ['BackendRejectedError'] },
    priority: { fairnessKey: userId, fairnessWeight: settings.fairnessWeight },
  };
}

function outcomeOfResult(result: GpuAttemptResult): AttemptOutcome {
  if (result.status === 'succeeded' && result.videoUrl) {
    return { kind: 'succeeded', backendJobId: result.backendJobId, videoUrl: result.videoUrl };
  }
  if (result.status === 'canceled') return { kind: 'canceled' };
  const error = result.error ?? { code: 'internal_error', message: 'the backend reported no error' };
  return { kind: 'failed', backendJobId: result.backendJobId, error: generationError(fromBackendErrorCode(error.code), error.message) };
}

function outcomeOfEvent(event: BackendEvent): AttemptOutcome {
  return outcomeOfResult({
    backendJobId: event.backendJobId,
    status: event.type === 'succeeded' ? 'succeeded' : event.type === 'canceled' ? 'canceled' : 'failed',
    videoUrl: event.videoUrl ?? null,
    error: event.error ?? null,
  });
}

function outcomeOfFailure(failure: unknown): AttemptOutcome {
  if (isCancellation(failure)) return { kind: 'canceled' };
  const cause = failure instanceof ActivityFailure ? failure.cause : failure;
  const rejected = cause instanceof ApplicationFailure && cause.type === 'BackendRejectedError';
  const message = cause instanceof Error ? cause.message : 'the GPU activity failed';
  return {
    kind: 'failed',
    backendJobId: null,
    error: generationError(rejected ? 'invalid_input' : 'backend_unavailable', message),
  };
}
