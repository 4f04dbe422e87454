import { ApplicationFailure, CancelledFailure, CompleteAsyncError, Context } from '@temporalio/activity';
import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import {
  BackendRejectedError,
  endOverdueJob,
  isJobNotFound,
  BackendUnavailableError,
  TERMINAL_BACKEND_STATUSES,
  type BackendJob,
  type BackendSubmitRequest,
  type GenerationBackend,
} from '../backend/types';
import type { Db } from '../db/client';
import { applyWrite, type QueuedJob } from '../db/projection';
import type { RunFunding } from './lifecycle';
import { generations } from '../db/schema';
import { and, eq, sql } from 'drizzle-orm';
import { backendClientKey, runTag, type GenerationRequest, type GpuAttemptResult } from '../domain/generation';
import type { Logger } from '../lib/logger';
import { timeInQueue } from '../lib/metrics';
import { urlWithTraceContext } from '../lib/tracing';
import { BACKEND_DOWN_FAILURE, backendEventSignal, GENERATION_TIMEOUT_FAILURE, INSUFFICIENT_CREDITS_FAILURE } from '../contracts/generation';
import { attemptStopKey, type BackendWakeups } from '../dispatch/backend-wakeups';
import { abandonBackendJob, type BackendHealth } from '../dispatch/backend-health';

export interface GpuActivityDeps {
  db: Db;
  /** The backend of an attempt that names none (every attempt of a deployment with one backend). */
  backend: GenerationBackend;
  /** Every backend by name, when routing across several: an attempt runs on the one its input names. */
  backends?: Map<string, GenerationBackend>;
  /** Routing's view of each backend (down, capacity), for failing over; unset with one backend. */
  health?: BackendHealth;
  /** A running attempt whose backend has been unreachable this long, while down and another is up, fails over. */
  failoverAfterMs?: number;
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
  /** A first run's opening at its GPU slot (src/activities/lifecycle.ts createRunOpener's openAtSlot). */
  openRun: (job: QueuedJob, runOpenedAt: string) => Promise<RunFunding>;
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
  /**
   * The attempt's running deadline, from the backend's acceptance: past it the backend job is asked once more, canceled
   * if still running, and the attempt fails with generation_timeout. Unset by a run begun before LEAN_RUN_PATCH, whose
   * workflow keeps that deadline on a timer of its own.
   */
  maxRunMs?: number;
  /** The backend routing chose for this attempt (a routed run); unset, the only one. */
  backend?: string;
  /** The other backends that can render the job: while one is up, this attempt leaves its backend when it is down. */
  alternatives?: string[];
  /**
   * Set by a first run that opens at its GPU slot (GenerationSettings.opensAtSlot): the attempt opens the run (its row
   * tied to the run, its reservation found) before it submits, and fails with insufficient_credits when there is none to
   * be had.
   */
  opens?: { userId: string; retryOf?: string };
  /**
   * Set by a run that ends on a success heard by callback (GenerationSettings.endsOnHeardSuccess): woken by the callback
   * of a backend job that then reads succeeded, the attempt frees its slot and completes without a report. The API
   * wakes the dispatcher only after the workflow took that callback's signal, and the workflow ends on it without
   * waiting for this activity.
   */
  quietOnHeardSuccess?: true;
}

/** Returns a function to call often: it heartbeats once 0.7 of the heartbeat timeout has passed since the last one. */
function heartbeatWhenDue(details: () => GpuHeartbeat): () => void {
  const ctx = Context.current();
  const everyMs = (ctx.info.heartbeatTimeoutMs ?? 10_000) * 0.7;
  let last = Date.now();
  return () => {
    if (Date.now() - last < everyMs) return;
    last = Date.now();
    ctx.heartbeat(details());
  };
}

/** The workflow's "stop this attempt" (its cancel or deadline), heard through the wake-up channel. */
interface AttemptStop {
  requested: boolean;
  woken: Promise<void>;
}

/** Heartbeat details: what a retried attempt needs to resume the same backend job instead of submitting a new one. */
interface GpuHeartbeat {
  backendJobId: string | null;
  /** When the backend accepted this attempt (epoch ms): its running deadline counts from there. */
  acceptedAtMs?: number;
}

/**
 * The GPU slot. One running `runGeneration` is one backend job in flight: it submits, then holds its worker slot until
 * the backend job ends, waking on the job's callback (Postgres LISTEN) or on its poll timer, whichever comes first.
 */
export function createGpuActivities(deps: GpuActivityDeps) {
  const { db, wakeups, client, callbackUrl, pollIntervalMs } = deps;

  function backendOf(input: GpuAttemptInput): GenerationBackend {
    if (input.backend === undefined || deps.backends === undefined) return deps.backend;
    const backend = deps.backends.get(input.backend);
    if (!backend) throw ApplicationFailure.nonRetryable(`no backend named ${input.backend} is configured here`, 'BackendRejectedError');
    return backend;
  }

  /**
   * Whether this attempt should leave its backend: it is down (health check or circuit) and another backend that can
   * render the job is up with a pool above zero. False when routing is off or the state cannot be read.
   */
  async function shouldLeave(input: GpuAttemptInput): Promise<boolean> {
    if (!deps.health || input.backend === undefined || !input.alternatives?.length) return false;
    try {
      const states = await deps.health.states();
      if (!states.get(input.backend)?.down) return false;
      return input.alternatives.some((name) => {
        const other = states.get(name);
        return other !== undefined && !other.down && other.capacity > 0;
      });
    } catch {
      return false;
    }
  }

  /**
   * Leaves a down backend: a job it holds is abandoned with its cancel owed (sent once the backend answers: no backend
   * job stays live for an attempt nobody follows), and the workflow routes a new attempt elsewhere.
   */
  async function leave(input: GpuAttemptInput, backendJobId: string | null, log: Logger): Promise<never> {
    if (backendJobId) await abandonBackendJob(db, { backend: input.backend!, backendJobId, jobId: input.jobId });
    log.warn({ backend: input.backend, backendJobId }, 'the backend is down: this attempt fails over to another');
    throw ApplicationFailure.create({
      type: BACKEND_DOWN_FAILURE,
      message: `backend ${input.backend} is down${backendJobId ? `; its job ${backendJobId} is abandoned and will be canceled` : ''}`,
      nonRetryable: true,
      details: [{ backend: input.backend, backendJobId }],
    });
  }

  async function submission({ jobId, runOpenedAt, attempt, request }: GpuAttemptInput, withCallback: boolean): Promise<BackendSubmitRequest> {
    return {
      client_key: backendClientKey(jobId, runOpenedAt, attempt),
      prompt: request.prompt,
      duration_seconds: request.duration_seconds,
      resolution: request.resolution,
      aspect_ratio: request.aspect_ratio,
      seed: request.seed,
      ...(request.input_reference === undefined ? {} : { input_reference: request.input_reference }),
      ...(request.remix_of === undefined ? {} : { remix_of: await remixSource(jobId, request.remix_of) }),
      // With tracing on, the URL carries this attempt's trace context: the callback joins the job's trace.
      ...(withCallback ? { callback_url: urlWithTraceContext(callbackUrl) } : {}),
    };
  }

  /**
   * The job a remix starts from: the same user's, succeeded, with its video (the API checked it before admission; it is
   * read again here for its video URL). Gone since (pruned), the remix cannot be rendered: the backend's refusal.
   */
  async function remixSource(jobId: string, remixOf: string): Promise<{ job_id: string; video_url: string }> {
    const [row] = await db.execute<{ video_url: string }>(sql`
      select source.video_url from generations job
      join generations source on source.user_id = job.user_id
      where job.id = ${jobId} and source.id = ${remixOf} and source.status = 'succeeded' and source.video_url is not null`);
    if (!row) throw new BackendRejectedError(`the remixed generation ${remixOf} is no longer there to remix`, 422, 'invalid_input');
    return { job_id: remixOf, video_url: row.video_url };
  }

  /**
   * Marks the job running in the projection and tells the workflow which backend job this attempt is. Returns false when
   * the workflow has already ended (canceled while this attempt was being submitted): nobody wants the backend job.
   */
  async function announceAccepted(input: GpuAttemptInput, backendJobId: string | null, progress: number, acceptedAtMs: number): Promise<boolean> {
    const { jobId, attempt, runOpenedAt, expectedRunMs } = input;
    const now = acceptedAtMs;
    if (attempt === 1 && Context.current().info.attempt === 1) timeInQueue.observe({ tier: input.tier }, (now - Date.parse(input.acceptedAt)) / 1000);
    await applyWrite(db, {
      jobId,
      runOpenedAt,
      status: 'running',
      attempt,
      progress,
      backendJobId,
      ...(input.backend === undefined ? {} : { backend: input.backend }),
      dispatcher: deps.dispatcherIdentity,
      startedAt: new Date(now).toISOString(),
      expectedDoneAt: new Date(now + expectedRunMs).toISOString(),
    });
    try {
      await client.workflow.getHandle(jobId).signal(backendEventSignal, { run: runTag(runOpenedAt), attempt, type: 'accepted', backendJobId: backendJobId ?? '' });
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) return false;
      deps.logger.warn({ jobId, backendJobId, err }, 'could not signal acceptance');
    }
    return true;
  }

  function result(job: BackendJob): GpuAttemptResult {
    return {
      backendJobId: job.id,
      status: job.status as GpuAttemptResult['status'],
      videoUrl: job.video_url,
      error: job.error ? { code: job.error.code, message: job.error.message } : null,
    };
  }

  /**
   * The backend job an earlier try of this attempt started: from its last heartbeat, or, before it ever heartbeated,
   * from the projection row it wrote when the backend accepted the job.
   */
  async function startedBackendJob({ jobId, runOpenedAt, attempt, expectedRunMs }: GpuAttemptInput): Promise<{ backendJobId: string; acceptedAtMs: number } | null> {
    const ctx = Context.current();
    const beat = ctx.info.heartbeatDetails as GpuHeartbeat | undefined;
    if (beat?.backendJobId) return { backendJobId: beat.backendJobId, acceptedAtMs: beat.acceptedAtMs ?? Date.now() };
    if (ctx.info.attempt === 1) return null;
    const [row] = await db
      .select({ backendJobId: generations.backendJobId, expectedDoneAt: generations.expectedDoneAt })
      .from(generations)
      .where(and(eq(generations.id, jobId), eq(generations.runOpenedAt, new Date(runOpenedAt)), eq(generations.attempt, attempt)));
    if (!row?.backendJobId) return null;
    // announceAccepted wrote expectedDoneAt as the acceptance plus expectedRunMs.
    return { backendJobId: row.backendJobId, acceptedAtMs: row.expectedDoneAt ? row.expectedDoneAt.getTime() - expectedRunMs : Date.now() };
  }

  /**
   * Submits the attempt. A retry of a try that may have submitted without hearing the answer (a timeout, a dispatcher
   * that died mid-call) first asks a provider without an idempotency key for the job that try created, and adopts it:
   * one attempt, one backend job. `since` is when the activity was first scheduled, less a minute for clock skew.
   */
  async function submitOrAdopt(backend: GenerationBackend, input: GpuAttemptInput, log: Logger): Promise<BackendJob> {
    const request = await submission(input, true);
    const info = Context.current().info;
    if (info.attempt > 1 && backend.findSubmitted) {
      const earlier = await backend.findSubmitted(request, new Date(info.scheduledTimestampMs - 60_000));
      if (earlier) {
        log.info({ backendJobId: earlier.id }, 'an earlier try of this attempt had submitted unanswered: its backend job is adopted');
        return earlier;
      }
    }
    return backend.submit(request);
  }

  async function runAsync(input: GpuAttemptInput, stop: AttemptStop, log: Logger): Promise<GpuAttemptResult> {
    const ctx = Context.current();
    const backend = backendOf(input);
    const resumed = await startedBackendJob(input);
    const resumedId = resumed?.backendJobId;
    // A routed attempt whose backend is down goes elsewhere before it submits anything there.
    if (!resumedId && (await shouldLeave(input))) await leave(input, null, log);
    let job: BackendJob;
    try {
      job = await callBackend(() => (resumedId ? backend.getJob(resumedId) : submitOrAdopt(backend, input, log)), resumedId);
    } catch (err) {
      if (err instanceof BackendUnavailableError && (await shouldLeave(input))) await leave(input, resumedId ?? null, log);
      throw err;
    }
    const acceptedAtMs = resumed?.acceptedAtMs ?? Date.now();
    log.info({ backendJobId: job.id, status: job.status, resumed: Boolean(resumedId) }, 'backend job accepted');
    if (!(await announceAccepted(input, job.id, job.progress, acceptedAtMs))) stop.requested = true;
    const deadlineAt = input.maxRunMs === undefined ? Infinity : acceptedAtMs + input.maxRunMs;

    // Each heartbeat is a billable action: they only keep the attempt alive, the first when 0.7 of the heartbeat
    // timeout has passed (a job shorter than that sends none), then as the SDK's throttle (0.8 of it) lets them through.
    // The workflow's cancel or deadline arrives as a wake-up (stop), the backend's word as a callback's wake-up or a
    // poll, whichever is first.
    const beat = heartbeatWhenDue(() => ({ backendJobId: job.id, acceptedAtMs }));
    const tickMs = Math.max(50, Math.min(pollIntervalMs, (ctx.info.heartbeatTimeoutMs ?? pollIntervalMs * 3) / 3));
    let lastPoll = Date.now();
    let progress = job.progress;
    /** Since when polls have failed in a row (the backend unreachable), for failing over. */
    let unreachableSince: number | undefined;
    /** Whether the last poll followed a callback's wake-up: the workflow has had that callback's signal. */
    let heard = false;
    try {
      while (!TERMINAL_BACKEND_STATUSES.has(job.status)) {
        if (stop.requested) {
          log.info({ backendJobId: job.id }, 'the workflow stopped this attempt: aborting the backend job');
          job = await backend.cancel(job.id);
          continue;
        }
        if (Date.now() >= deadlineAt) return await overdue(backend, job.id, log);
        // Wake for the heartbeat, the deadline or when the next poll is due, whichever is sooner, so polls keep their interval.
        const untilPoll = lastPoll + pollIntervalMs - Date.now();
        const waitMs = Math.max(1, Math.min(tickMs, untilPoll, deadlineAt - Date.now()));
        const woken = await Promise.race([wakeups.wait(job.id, waitMs), stop.woken.then(() => true), ctx.cancelled]);
        beat();
        if (stop.requested) continue;
        if (!woken && Date.now() - lastPoll < pollIntervalMs) continue;
        lastPoll = Date.now();
        heard = woken;
        try {
          job = await backend.getJob(job.id);
        } catch (err) {
          if (isJobNotFound(err)) throw jobLost(job.id);
          if (!(err instanceof BackendUnavailableError)) throw err;
          unreachableSince ??= Date.now();
          if (Date.now() - unreachableSince >= (deps.failoverAfterMs ?? Infinity) && (await shouldLeave(input))) await leave(input, job.id, log);
          log.warn({ backendJobId: job.id, err: err.message }, 'backend poll failed; will poll again');
          continue;
        }
        unreachableSince = undefined;
        if (job.progress > progress && !TERMINAL_BACKEND_STATUSES.has(job.status)) {
          progress = job.progress;
          await applyWrite(db, { jobId: input.jobId, runOpenedAt: input.runOpenedAt, status: 'running', attempt: input.attempt, progress });
        }
      }
    } catch (err) {
      throw await onInterrupted(backend, err, job.id, log);
    }
    // A success heard by callback: the workflow ends on the callback's signal and does not wait for this report.
    const quiet = heard && job.status === 'succeeded' && input.quietOnHeardSuccess === true;
    log.info({ backendJobId: job.id, status: job.status, ...(quiet ? { reported: false } : {}) }, 'backend job ended');
    if (quiet) throw new CompleteAsyncError(); // the slot is freed, nothing sent
    // Canceled at the deadline by an earlier try of this attempt, which did not live to say so.
    if (job.status === 'canceled' && Date.now() >= deadlineAt && !stop.requested) throw generationTimeout();
    return result(job);
  }

  /** Synchronous backends: one blocking call (idempotent by client key, so a retry re-attaches), heartbeating meanwhile. */
  async function runSync(input: GpuAttemptInput, stop: AttemptStop, log: Logger): Promise<GpuAttemptResult> {
    const ctx = Context.current();
    const backend = backendOf(input);
    if (!backend.generate) throw ApplicationFailure.nonRetryable('this backend has no synchronous mode', 'BackendRejectedError');
    const acceptedAtMs = Date.now();
    if (!(await announceAccepted(input, null, 0, acceptedAtMs))) stop.requested = true;
    const beat = setInterval(heartbeatWhenDue(() => ({ backendJobId: null })), Math.max(50, (ctx.info.heartbeatTimeoutMs ?? 3000) / 3));
    // The call ends when Temporal cancels the activity or when the workflow's stop arrives, whichever is first.
    const abort = new AbortController();
    const aborted = AbortSignal.any([ctx.cancellationSignal, abort.signal]);
    const stopped = stop.woken.then((): BackendJob => {
      abort.abort();
      const now = new Date().toISOString();
      return { id: '', client_key: backendClientKey(input.jobId, input.runOpenedAt, input.attempt), status: 'canceled', progress: 0, video_url: null, error: null, created_at: now, started_at: null, completed_at: now };
    });
    if (stop.requested) abort.abort();
    const deadline = input.maxRunMs === undefined ? undefined : setTimeout(() => abort.abort(), input.maxRunMs);
    const overran = () => deadline !== undefined && abort.signal.aborted && !stop.requested;
    try {
      const job = await Promise.race([callBackend(async () => backend.generate!(await submission(input, false), aborted)), stopped, ctx.cancelled]).catch((err: unknown) => {
        throw overran() ? generationTimeout() : err;
      });
      log.info({ backendJobId: job.id, status: job.status }, 'backend job ended');
      return result(job);
    } catch (err) {
      throw await onInterrupted(backend, err, null, log);
    } finally {
      clearInterval(beat);
      clearTimeout(deadline);
    }
  }

  /** The running deadline has passed: the backend's last word if it has just finished, else its job is canceled. */
  async function overdue(backend: GenerationBackend, backendJobId: string, log: Logger): Promise<GpuAttemptResult> {
    const job = await endOverdueJob(backend, backendJobId, () => log.warn({ backendJobId }, 'the generation ran past its deadline: canceling the backend job'));
    if (job.status === 'succeeded' || job.status === 'failed') return result(job);
    throw generationTimeout();
  }

  /** What an interrupted attempt throws, after aborting the backend job when the workflow asked for it. */
  async function onInterrupted(backend: GenerationBackend, err: unknown, backendJobId: string | null, log: Logger): Promise<unknown> {
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

  /**
   * Opens the attempt's run before anything is submitted (idempotent: a retried try, a later attempt, change nothing).
   * Returns false when the run has ended already: canceled or timed out in the queue while this dispatcher was taking
   * its task (its stop may have come before this attempt listened for it), so nothing is to be submitted.
   */
  async function openAtSlot(input: GpuAttemptInput, { userId, retryOf }: NonNullable<GpuAttemptInput['opens']>): Promise<boolean> {
    const job = { jobId: input.jobId, userId, tier: input.tier, request: input.request, acceptedAt: input.acceptedAt, ...(retryOf === undefined ? {} : { retryOf }) };
    const funding = await deps.openRun(job, input.runOpenedAt);
    if (!funding.ok) throw ApplicationFailure.create({ type: INSUFFICIENT_CREDITS_FAILURE, message: funding.message, nonRetryable: true });
    return funding.ended !== true;
  }

  async function runGeneration(input: GpuAttemptInput): Promise<GpuAttemptResult> {
    const log = deps.logger.child({ jobId: input.jobId, workflowId: input.jobId, attempt: input.attempt, ...(input.backend === undefined ? {} : { backend: input.backend }) });
    // Listening from the first moment, so a stop sent while the backend is still being asked is heard.
    const wake = wakeups.once(attemptStopKey(input.jobId, input.attempt));
    const stop: AttemptStop = { requested: false, woken: wake.woken };
    void wake.woken.then(() => (stop.requested = true));
    try {
      if (input.opens && !(await openAtSlot(input, input.opens))) {
        log.info('the run ended before this attempt took its slot: nothing submitted');
        return { backendJobId: '', status: 'canceled', videoUrl: null, error: null };
      }
      return await (deps.mode === 'sync' ? runSync(input, stop, log) : runAsync(input, stop, log));
    } finally {
      wake.cancel();
    }
  }

  return { runGeneration };
}

/** The attempt ran past its running deadline; the workflow reads it as generation_timeout (attempt-outcome.ts). */
function generationTimeout(): ApplicationFailure {
  return ApplicationFailure.create({ type: GENERATION_TIMEOUT_FAILURE, message: 'the generation ran past its deadline', nonRetryable: true });
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
