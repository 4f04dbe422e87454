import { ActivityCancellationType, ActivityFailure, ApplicationFailure, CancellationScope, condition, isCancellation, log, patched, proxyActivities, proxyLocalActivities, setHandler, TimeoutFailure, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { SearchAttributeUpdatePair } from '@temporalio/common';
import type * as endingActivities from '../activities/ending';
import type * as gpuActivities from '../activities/gpu';
import type * as lifecycleActivities from '../activities/lifecycle';
import type * as notifyActivities from '../activities/notify';
import type * as projectionActivities from '../activities/projection';
import { endingWrite, runTag, type GenerationInput, type GenerationState, type GpuAttemptResult } from '../domain/generation';
import { classifyError, generationError } from '../domain/generation-errors';
import { renderRequestOf } from '../domain/render-request';
import { assertTransition, isTerminal, type GenerationStatus } from '../domain/generation-state';
import { SA_BACKEND_JOB_ID, SA_STATUS } from '../domain/search-attributes';
import { gpuActivityOptions, outcomeOfEvent, outcomeOfFailure, outcomeOfOverdue, outcomeOfResult, type AttemptOutcome } from './attempt-outcome';
import { BACKEND_DOWN_FAILURE, backendEventSignal, cancelGenerationSignal, generationStateQuery, rerouteQueuedSignal, type BackendEvent } from '../contracts/generation';

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
// outside: each step idempotent, so it is retried until done. Its steps take milliseconds: no heartbeat (each would be
// a billable action); a worker lost mid-way is given up after the start-to-close timeout.
const ending = proxyActivities<EndingActivities>({
  startToCloseTimeout: '1m',
  retry: { initialInterval: '500ms', maximumInterval: '30s' },
});

// The lean run's short steps (its opening: projection row and credit reservation; stopping an attempt; its ending) run
// first as local activities: markers in the workflow task that asked for them, rather than scheduled activities, each
// of which costs an action and a workflow task more. Each is idempotent and takes milliseconds. A local activity holds
// its workflow task open (and its worker's shutdown) while it retries, so it gets a few seconds only; past them the
// same step runs as an ordinary activity, retried by the server until done (`durably`).
const LOCAL_STEP = {
  scheduleToCloseTimeout: '15s',
  retry: { initialInterval: '200ms', maximumInterval: '2s' },
} as const;
const quick = proxyLocalActivities<LifecycleActivities>(LOCAL_STEP);
const endingNow = proxyLocalActivities<EndingActivities>(LOCAL_STEP);

/** A local activity's step, or, if it did not succeed within its few seconds, the same step as an ordinary activity. */
async function durably<T>(local: () => Promise<T>, ordinary: () => Promise<T>): Promise<T> {
  try {
    return await local();
  } catch (err) {
    if (isCancellation(err)) throw err;
    log.warn('a local step did not succeed in time; running it as an activity', { error: err instanceof Error ? err.message : String(err) });
    return ordinary();
  }
}

/**
 * A run that reaches its end on this build ends through one activity; one that ended on an earlier build ran the same
 * steps as three activities, and replays them. docs/decisions.md ("Replay safety") says when that branch can go.
 */
export const ONE_ENDING_PATCH = 'one-ending';

/**
 * The lean run: local activities open and end it, the search attributes are written once when it runs and once when it
 * ends, the GPU activity keeps the running deadline (no timer), and a canceled attempt is stopped through the GPU
 * activity's wake-up. A run begun on an earlier build replays what it did. docs/decisions.md ("Engine cost per job").
 */
export const LEAN_RUN_PATCH = 'lean-run';

/**
 * Routing across backends (a run whose settings say `routing`: the deployment has several): each attempt is routed by a
 * local activity whose answer is recorded, and runs on its backend's own `gpu` task queue. docs/decisions.md ("Routing
 * across backends").
 */
export const BACKEND_ROUTING_PATCH = 'backend-routing';

/**
 * A routed attempt still waiting in the queue of a backend that is paused or down, asked by a GPU dispatcher to leave it
 * (src/dispatch/queued-reroutes.ts), takes its task out of the queue and the run routes a new attempt. docs/decisions.md
 * ("Queued jobs leave a paused or down backend").
 */
export const REROUTE_QUEUED_PATCH = 'reroute-queued';

/**
 * The history's length in a run's first workflow task when nothing came before it (started, task scheduled, task
 * started). A longer one is a reset run's (its earlier events, the failed task that reset it), or one signaled before its
 * first task, or one whose first task was retried: those open first, in a local activity, as every run did before.
 */
const FIRST_TASK_HISTORY_LENGTH = 3;

/** Attempts moved off a down or paused backend before the run stops moving them (each needs another backend up). */
const MAX_REROUTES = 10;

type AttemptRoute = Awaited<ReturnType<LifecycleActivities['routeAttempt']>>;
type RoutedAttempt = Extract<AttemptRoute, { kind: 'routed' }>;

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

  // A run started with settings.lean is lean by its input, and records no patch marker; one started before asks the patch,
  // and replays the marker its history holds (or its absence: a run from before the lean run).
  const lean = settings.lean === true || patched(LEAN_RUN_PATCH);
  // Only a run started with routing (several backends) asks: a one-backend run's history is what it always was.
  const routed = lean && input.settings.routing === true && patched(BACKEND_ROUTING_PATCH);
  if (routed) {
    state.backend = null;
    state.failedOverFrom = null;
  }
  /** The route of the attempt under way (routed runs). */
  let route: RoutedAttempt | undefined;
  /** Attempts whose GPU activity has not settled: the lean run waits for them before completing (see finish). */
  const gpuOpen = new Set<number>();
  /** Attempts of this run whose success a backend callback reported, whatever the run had decided by then. */
  const heardSuccess = new Set<number>();
  /** A backend job accepted after this run was canceled, which nothing else would abort. */
  let lateAccepted: string | undefined;
  /** The waiting attempt a dispatcher asked to leave its paused or down backend. */
  let rerouteAsked = 0;

  setHandler(generationStateQuery, () => state);
  setHandler(cancelGenerationSignal, () => {
    if (!isTerminal(state.status)) cancelRequested = true;
  });
  setHandler(rerouteQueuedSignal, (ask) => {
    // Only the attempt under way, on the backend the ask names, before that backend accepted it.
    if (!route || ask.run !== runTag(runOpenedAt) || ask.attempt !== state.attempt || ask.from !== route.backend) return;
    if (acceptedAttempt === ask.attempt || cancelRequested || isTerminal(state.status)) return;
    if (patched(REROUTE_QUEUED_PATCH)) rerouteAsked = ask.attempt;
  });
  setHandler(backendEventSignal, (event) => {
    if (event.type === 'succeeded' && event.run === runTag(runOpenedAt)) heardSuccess.add(event.attempt);
    const acceptance = event.type === 'accepted' || event.type === 'started';
    if (lean && acceptance && event.run === runTag(runOpenedAt) && event.attempt === state.attempt && acceptedAttempt !== event.attempt && cancelRequested && event.backendJobId) {
      lateAccepted = event.backendJobId;
    }
    // Events of another run or attempt, or after the end, are stale: ignored.
    if (event.run !== runTag(runOpenedAt) || event.attempt !== state.attempt || isTerminal(state.status)) return;
    if (acceptance) {
      acceptedAttempt = event.attempt;
      markRunning(event.backendJobId);
    } else if (!terminalEvents.has(event.attempt)) {
      terminalEvents.set(event.attempt, event);
    }
  });

  function markRunning(backendJobId: string): void {
    if (route) state.backend = route.backend;
    if (lean) return transition(state.status === 'queued' ? 'running' : undefined, backendJobId);
    if (state.status === 'queued') transition('running');
    if (backendJobId && state.backendJobId !== backendJobId) {
      state.backendJobId = backendJobId;
      upsertSearchAttributes([{ key: SA_BACKEND_JOB_ID, value: backendJobId }]);
    }
  }

  /** Moves the status and records a new backend job id; the lean run writes both search attributes in one upsert. */
  function transition(to: GenerationStatus | undefined, backendJobId?: string | null): void {
    const updates: SearchAttributeUpdatePair[] = [];
    if (to !== undefined) {
      assertTransition(state.status, to);
      state.status = to;
      updates.push({ key: SA_STATUS, value: to });
    }
    if (lean && backendJobId && state.backendJobId !== backendJobId) {
      state.backendJobId = backendJobId;
      updates.push({ key: SA_BACKEND_JOB_ID, value: backendJobId });
    }
    if (updates.length > 0) upsertSearchAttributes(updates);
  }

  const { duration_seconds, resolution } = input.request;
  const reservation = { jobId, userId: input.userId, request: { duration_seconds, resolution }, runOpenedAt };
  let funded: Awaited<ReturnType<LifecycleActivities['ensureRunReservation']>>;
  // A first run started to open at its GPU slot (GenerationSettings.opensAtSlot) does; decided from its input and history
  // alone, so a replay decides the same.
  const opensAtSlot = lean && settings.opensAtSlot === true && !routed && workflowInfo().historyLength <= FIRST_TASK_HISTORY_LENGTH;
  const opens = opensAtSlot ? { opens: { userId: input.userId, ...(input.retryOf === undefined ? {} : { retryOf: input.retryOf }) } } : {};
  // A success heard by callback ends the run without its GPU activity's close (GenerationSettings.endsOnHeardSuccess).
  const endsOnHeardSuccess = lean && settings.endsOnHeardSuccess === true && !routed;
  const quiet = endsOnHeardSuccess ? { quietOnHeardSuccess: true as const } : {};
  if (opensAtSlot) {
    funded = { ok: true }; // the GPU activity says otherwise, as insufficient_credits
  } else if (lean) {
    const opening = { input, runOpenedAt };
    funded = await durably(
      () => quick.openFundedRun(opening),
      () => lifecycle.openFundedRun(opening),
    );
  } else {
    await projection.openRun({ input, runOpenedAt });
    funded = await lifecycle.ensureRunReservation(reservation);
  }
  if (!funded.ok) return finish({ kind: 'failed', backendJobId: null, error: generationError('insufficient_credits', funded.message) });

  /** Attempts that left a down backend before ending there: they do not count as retries. */
  let reroutes = 0;
  let avoid: string[] = [];
  for (;;) {
    state.attempt += 1;
    if (routed) {
      // Only backends that take the job's start image or remixed video, when it has them.
      const routing = { jobId, attempt: state.attempt, request: renderRequestOf(input.request), avoid };
      const decision = await durably(
        () => quick.routeAttempt(routing),
        () => lifecycle.routeAttempt(routing),
      );
      if (decision.kind === 'none') return finish({ kind: 'failed', backendJobId: null, error: generationError('invalid_input', decision.reason) });
      route = decision;
      if (decision.skipped.length > 0) state.failedOverFrom ??= decision.skipped[0];
    }
    let outcome = await runAttempt(state.attempt);
    if (outcome.kind === 'rerouted') {
      state.failedOverFrom ??= outcome.from;
      if (reroutes < MAX_REROUTES) {
        reroutes += 1;
        avoid = [outcome.from];
        log.info('generation attempt left a down or paused backend; routing a new one', { jobId, attempt: state.attempt, backend: outcome.from });
        continue;
      }
      outcome = { kind: 'failed', backendJobId: null, error: generationError('backend_unavailable', outcome.message) };
    }
    avoid = [];
    if (outcome.kind === 'failed' && classifyError(outcome.error.code).retryAttempt && state.attempt - reroutes < settings.maxAttempts) {
      log.info('generation attempt failed, retrying', { jobId, attempt: state.attempt, code: outcome.error.code });
      const backoff = settings.retryBackoffMs * 2 ** (state.attempt - 1);
      if (await condition(() => cancelRequested, backoff)) return finish({ kind: 'canceled' });
      continue;
    }
    return finish(outcome);
  }

  /** Runs attempt N on a GPU slot and waits for the first terminal word on it: activity, callback, deadline or cancel. */
  async function runAttempt(attempt: number): Promise<AttemptOutcome | { kind: 'rerouted'; from: string; message: string }> {
    // The lean run's GPU activity, once canceled, counts as ended only when Temporal says so (its completion, or the
    // cancellation confirmed): the run completes after it, so that completion never lands on the run's last workflow task.
    // A routed attempt runs on its backend's own queue (its pool).
    const options = { ...gpuActivityOptions(input, attempt), ...(route ? { taskQueue: route.taskQueue } : {}) };
    const gpu = proxyActivities<GpuActivities>(lean ? { ...options, cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED } : options);
    const scope = new CancellationScope();
    // The lean run's running deadline is kept by the GPU activity (maxRunMs), not by a timer here (an action per job).
    const maxRunMs = lean ? settings.maxRunMs : undefined;
    const onRoute = route ? { backend: route.backend, alternatives: route.alternatives } : {};
    const onGpu = scope.run(() => gpu.runGeneration({ jobId, attempt, runOpenedAt, tier: input.tier, acceptedAt: input.acceptedAt, request: input.request, expectedRunMs: settings.expectedRunMs, maxRunMs, ...onRoute, ...opens, ...quiet }));
    let result: GpuAttemptResult | undefined;
    let failure: unknown;
    onGpu.then(
      (r) => (result = r),
      (e) => (failure = e ?? new Error('GPU activity failed')),
    );
    gpuOpen.add(attempt);
    const settled = onGpu.then(
      () => void gpuOpen.delete(attempt),
      () => void gpuOpen.delete(attempt),
    );
    // A backend job canceled that the user did not cancel was canceled by the GPU activity at the running deadline (the
    // lean run keeps it there): its word, generation_timeout, follows at once.
    const eventDecides = (event: BackendEvent | undefined): event is BackendEvent => event !== undefined && !(lean && event.type === 'canceled' && !cancelRequested);
    const decided = () => result !== undefined || failure !== undefined || eventDecides(terminalEvents.get(attempt)) || cancelRequested || rerouteAsked === attempt;

    // The running deadline counts from the backend's acceptance; the queue deadline is the activity's schedule-to-start.
    if (lean) {
      await condition(decided);
    } else {
      await condition(() => decided() || acceptedAttempt === attempt);
      if (!decided() && !(await condition(decided, settings.maxRunMs))) {
        const backendJobId = state.backendJobId;
        const last = backendJobId ? await lifecycle.finalizeOverdueAttempt({ backendJobId }) : undefined;
        scope.cancel();
        return outcomeOfOverdue(last);
      }
    }

    if (result) {
      if (route) state.backend = route.backend;
      return outcomeOfResult(result);
    }
    const event = terminalEvents.get(attempt);
    if (eventDecides(event)) {
      // A success heard by callback woke the GPU activity too, after the signal: it frees its slot and completes without
      // a report, so the run neither cancels it nor waits for it (finish). One that missed the wake-up finds the success
      // at its next poll and reports to a run that has ended or is ending (at worst, one workflow task more).
      if (!(endsOnHeardSuccess && event.type === 'succeeded')) scope.cancel(); // the backend has finished: free the GPU slot now
      if (route) state.backend = route.backend;
      return outcomeOfEvent(event);
    }
    if (cancelRequested) {
      scope.cancel(); // queued: the task leaves the backlog; running: the activity aborts the backend job
      // Also abort from here, in case the dispatcher holding the job is gone. The lean run wakes that dispatcher too
      // (its heartbeats, which would carry the cancellation, are ~40 s apart), whether or not the backend accepted yet.
      const backendJobId = acceptedAttempt === attempt ? state.backendJobId : null;
      if (lean) await stopAttempt({ jobId, attempt, backendJobId, ...(route ? { backend: route.backend } : {}) });
      else if (backendJobId) await lifecycle.cancelBackendJob({ backendJobId });
      return { kind: 'canceled' };
    }
    if (route && rerouteAsked === attempt && failure === undefined) {
      // Still queued: the task leaves the queue at once. Taken by a dispatcher meanwhile (its pool came back), the
      // attempt hears the stop at once and aborts what it submitted; either way it has settled before a new one is routed.
      scope.cancel();
      await stopAttempt({ jobId, attempt, backendJobId: null, backend: route.backend });
      await settled;
      const ran = result as GpuAttemptResult | undefined;
      const word = terminalEvents.get(attempt);
      if (cancelRequested) return { kind: 'canceled' };
      if (ran && ran.status !== 'canceled') return outcomeOfResult(ran);
      if (word && word.type !== 'canceled') return outcomeOfEvent(word);
      // Its queue deadline passed first.
      const failed = failure as unknown;
      if (failed instanceof ActivityFailure && failed.cause instanceof TimeoutFailure) return outcomeOfFailure(failed);
      return { kind: 'rerouted', from: route.backend, message: `backend ${route.backend} is paused or down: the waiting job moves` };
    }
    // A routed attempt that left its backend because it was down: the loop routes a new one.
    const cause = failure instanceof ActivityFailure ? failure.cause : undefined;
    if (route && cause instanceof ApplicationFailure && cause.type === BACKEND_DOWN_FAILURE) return { kind: 'rerouted', from: route.backend, message: cause.message };
    return outcomeOfFailure(failure);
  }

  function stopAttempt(stop: { jobId: string; attempt: number; backendJobId: string | null; backend?: string }): Promise<void> {
    return durably(
      () => quick.stopAttempt(stop),
      () => lifecycle.stopAttempt(stop),
    );
  }

  async function finish(outcome: AttemptOutcome): Promise<GenerationState> {
    const completedAt = new Date().toISOString();
    switch (outcome.kind) {
      case 'succeeded':
        if (lean) {
          if (state.status === 'queued') state.status = 'running'; // a sync backend's first word is its result
          state.videoUrl = outcome.videoUrl;
          transition('succeeded', outcome.backendJobId);
          break;
        }
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
    if (lean) {
      // A local activity: it runs in the workflow task that decided the ending, which then completes the workflow. A
      // routed job is charged on the backend that ran it.
      const charged = routed && state.status === 'succeeded' && route ? { charge: { request: { duration_seconds, resolution, ...(input.request.priority ? { priority: input.request.priority } : {}) }, costFactor: route.costFactor } } : {};
      const end = { write, userId: input.userId, webhookUrl, endedAt: completedAt, ...charged };
      await durably(
        () => endingNow.endGeneration(end),
        () => ending.endGeneration(end),
      );
    } else if (patched(ONE_ENDING_PATCH)) {
      await ending.endGeneration({ write, userId: input.userId, webhookUrl, endedAt: completedAt });
    } else {
      // Credits first: once a client sees the job ended, its usage already shows the settlement.
      await lifecycle.settleJobCredits({ jobId, succeeded: state.status === 'succeeded' });
      await projection.recordTransition(write);
      await notify.notifyGenerationEnded({ jobId, userId: input.userId, status: state.status, webhookUrl, endedAt: completedAt });
    }
    if (lateAccepted !== undefined) await stopAttempt({ jobId, attempt: state.attempt, backendJobId: lateAccepted, ...(route ? { backend: route.backend } : {}) });
    // The user has their ending already; the run itself closes once its GPU activity has (it wakes on the same callback
    // or stop within milliseconds; a dispatcher lost meanwhile is given up after its heartbeat timeout).
    // An activity that heard its job's success by callback sends no report (endsOnHeardSuccess): not waited for.
    const closed = () => [...gpuOpen].every((attempt) => endsOnHeardSuccess && heardSuccess.has(attempt));
    if (lean && !closed()) await condition(closed);
    return state;
  }
}
