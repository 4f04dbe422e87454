import { CancellationScope, condition, log, patched, proxyActivities, setHandler, upsertSearchAttributes } from '@temporalio/workflow';
import type * as endingActivities from '../activities/ending';
import type * as gpuActivities from '../activities/gpu';
import type * as lifecycleActivities from '../activities/lifecycle';
import type * as notifyActivities from '../activities/notify';
import type * as projectionActivities from '../activities/projection';
import { endingWrite, runTag, type GenerationInput, type GenerationState, type GpuAttemptResult } from '../domain/generation';
import { classifyError, generationError } from '../domain/generation-errors';
import { assertTransition, isTerminal, type GenerationStatus } from '../domain/generation-state';
import { SA_BACKEND_JOB_ID, SA_STATUS } from '../domain/search-attributes';
import { gpuActivityOptions, outcomeOfEvent, outcomeOfFailure, outcomeOfOverdue, outcomeOfResult, type AttemptOutcome } from './attempt-outcome';
import { backendEventSignal, cancelGenerationSignal, generationStateQuery, type BackendEvent } from '../contracts/generation';

type ProjectionActivities = ReturnType<typeof projectionActivities.createProjectionActivities>;
type GpuActivities = ReturnType<typeof gpuActivities.createGpuActivities>;
type LifecycleActivities = ReturnType<typeof lifecycleActivities.createLifecycleActivities>;
type NotifyActivities = ReturnType<typeof notifyActivities.createNotifyActivities>;
type EndingActivities = ReturnType<typeof endingActivities.createEndingActivities>;

// Projection writes must land eventually: retried without limit, each one idempotent.
const projection = proxyActivities<ProjectionActivities>({
  startToCloseTimeout: '30s',
  retry: { initialInterval: '500ms', maximumInterval: '30s' },
});

// The end notification must land too; it is keyed by (job, event), so a retry after a crash changes nothing.
const notify = proxyActivities<NotifyActivities>({
  startToCloseTimeout: '10s',
  retry: { initialInterval: '500ms', maximumInterval: '30s' },
});

// Deadlines, backend cancellation and credits: each idempotent, retried until done.
const lifecycle = proxyActivities<LifecycleActivities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '1s', maximumInterval: '30s' },
});

// The job's ending (credits, terminal row, notification), the same the reconciler runs for a workflow ended from
// outside: each step idempotent, so it is retried until done; it heartbeats between steps and per webhook destination.
const ending = proxyActivities<EndingActivities>({
  startToCloseTimeout: '1m',
  heartbeatTimeout: '10s',
  retry: { initialInterval: '500ms', maximumInterval: '30s' },
});

/**
 * A run that reaches its end on this build ends through one activity; one that ended on an earlier build ran the same
 * steps as three activities, and replays them. docs/decisions.md ("Replay safety") says when that branch can go.
 */
export const ONE_ENDING_PATCH = 'one-ending';

/**
 * One video generation, from acceptance to a terminal state. Holds a GPU slot only through the GPU activity, which the
 * `gpu` task queue dispatches fairly by user (Temporal fairness keys, weighted by tier).
 */
export async function generationWorkflow(input: GenerationInput): Promise<GenerationState> {
  const { jobId, settings } = input;
  // The run's own clock at its first step (deterministic on replay; later for a run an operator restarts by reset).
  const runOpenedAt = new Date().toISOString();
  const state: GenerationState = { jobId, runOpenedAt, status: 'queued', attempt: 0, backendJobId: null, videoUrl: null, error: null };
  /** Terminal backend events by attempt, as they arrive by signal. */
  const terminalEvents = new Map<number, BackendEvent>();
  let cancelRequested = false;
  /** The latest attempt the backend has accepted: its running deadline is on. */
  let acceptedAttempt = 0;

  setHandler(generationStateQuery, () => state);
  setHandler(cancelGenerationSignal, () => {
    if (!isTerminal(state.status)) cancelRequested = true;
  });
  setHandler(backendEventSignal, (event) => {
    // Events of another run or attempt, or after the end, are stale: ignored.
    if (event.run !== runTag(runOpenedAt) || event.attempt !== state.attempt || isTerminal(state.status)) return;
    if (event.type === 'accepted' || event.type === 'started') {
      acceptedAttempt = event.attempt;
      markRunning(event.backendJobId);
    } else if (!terminalEvents.has(event.attempt)) {
      terminalEvents.set(event.attempt, event);
    }
  });

  function markRunning(backendJobId: string): void {
    if (state.status === 'queued') transition('running');
    if (backendJobId && state.backendJobId !== backendJobId) {
      state.backendJobId = backendJobId;
      upsertSearchAttributes([{ key: SA_BACKEND_JOB_ID, value: backendJobId }]);
    }
  }

  function transition(to: GenerationStatus): void {
    assertTransition(state.status, to);
    state.status = to;
    upsertSearchAttributes([{ key: SA_STATUS, value: to }]);
  }

  await projection.openRun({ input, runOpenedAt });
  const { duration_seconds, resolution } = input.request;
  const funded = await lifecycle.ensureRunReservation({ jobId, userId: input.userId, request: { duration_seconds, resolution }, runOpenedAt });
  if (!funded.ok) return finish({ kind: 'failed', backendJobId: null, error: generationError('insufficient_credits', funded.message) });

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

  /** Runs attempt N on a GPU slot and waits for the first terminal word on it: activity, callback, deadline or cancel. */
  async function runAttempt(attempt: number): Promise<AttemptOutcome> {
    const gpu = proxyActivities<GpuActivities>(gpuActivityOptions(input, attempt));
    const scope = new CancellationScope();
    const onGpu = scope.run(() => gpu.runGeneration({ jobId, attempt, runOpenedAt, tier: input.tier, acceptedAt: input.acceptedAt, request: input.request, expectedRunMs: settings.expectedRunMs }));
    let result: GpuAttemptResult | undefined;
    let failure: unknown;
    onGpu.then(
      (r) => (result = r),
      (e) => (failure = e ?? new Error('GPU activity failed')),
    );
    const decided = () => result !== undefined || failure !== undefined || terminalEvents.has(attempt) || cancelRequested;

    // The running deadline counts from the backend's acceptance; the queue deadline is the activity's schedule-to-start.
    await condition(() => decided() || acceptedAttempt === attempt);
    if (!decided() && !(await condition(decided, settings.maxRunMs))) {
      const backendJobId = state.backendJobId;
      const last = backendJobId ? await lifecycle.finalizeOverdueAttempt({ backendJobId }) : undefined;
      scope.cancel();
      return outcomeOfOverdue(last);
    }

    if (result) return outcomeOfResult(result);
    const event = terminalEvents.get(attempt);
    if (event) {
      scope.cancel(); // the backend has finished: free the GPU slot now
      return outcomeOfEvent(event);
    }
    if (cancelRequested) {
      scope.cancel(); // queued: the task leaves the backlog; running: the activity aborts the backend job
      // Also abort from here, in case the dispatcher holding the job is gone.
      if (acceptedAttempt === attempt && state.backendJobId) await lifecycle.cancelBackendJob({ backendJobId: state.backendJobId });
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
    const write = endingWrite(state, completedAt);
    const webhookUrl = input.request.webhook_url ?? null;
    if (patched(ONE_ENDING_PATCH)) {
      await ending.endGeneration({ write, userId: input.userId, webhookUrl, endedAt: completedAt });
    } else {
      // Credits first: once a client sees the job ended, its usage already shows the settlement.
      await lifecycle.settleJobCredits({ jobId, succeeded: state.status === 'succeeded' });
      await projection.recordTransition(write);
      await notify.notifyGenerationEnded({ jobId, userId: input.userId, status: state.status, webhookUrl, endedAt: completedAt });
    }
    return state;
  }
}
