import { endOverdueJob, type GenerationBackend } from '../backend/types';
import { ensureRunReservation, InsufficientCreditsError, settleCredits } from '../credits/ledger';
import { sql } from 'drizzle-orm';
import type { Db } from '../db/client';
import { attemptStopKey, BACKEND_JOB_CHANNEL } from '../dispatch/backend-wakeups';
import { openRun, type QueuedJob } from '../db/projection';
import type { GenerationInput, GenerationRequest, GpuAttemptResult } from '../domain/generation';
import type { RenderRequest } from '../domain/backend-specs';
import { creditsFor, type PriceRules } from '../domain/pricing';
import { chooseBackend, reservedCredits, type BackendPool, type RoutableBackend } from '../domain/routing';
import type { BackendHealth } from '../dispatch/backend-health';
import { recordQueuedRoute } from '../dispatch/queued-reroutes';

export interface RunReservationInput {
  jobId: string;
  userId: string;
  /** What the job costs is the request's price (src/domain/pricing.ts), as quoted at submit. */
  request: Pick<GenerationRequest, 'duration_seconds' | 'resolution' | 'priority'> & { aspect_ratio?: GenerationRequest['aspect_ratio'] };
  runOpenedAt: string;
}

/** An attempt's route (routeAttempt), as the workflow records it. */
export type AttemptRoute =
  | { kind: 'routed'; backend: string; taskQueue: string; costFactor: number; skipped: string[]; alternatives: string[] }
  | { kind: 'none'; reason: string };

export interface RouteAttemptInput {
  jobId: string;
  attempt: number;
  /** Its shape, and whether it takes an image or a video in (renderRequestOf). */
  request: RenderRequest;
  /** The backend the previous attempt left because it was down: passed over while another can take the job. */
  avoid?: string[];
}

/** Routing across several backends: each backend's spec, pool, and shared health (src/dispatch/backend-health.ts). */
export interface RoutingDeps {
  specs: RoutableBackend[];
  pools: BackendPool[];
  health: BackendHealth;
}

export interface LifecycleDeps {
  db: Db;
  /** The first (or only) backend: the one of an attempt that names none. */
  backend: GenerationBackend;
  /** Every backend by name (routing); unset with one. */
  backends?: Map<string, GenerationBackend>;
  routing?: RoutingDeps;
  /** Every configured backend (cost factors and what each renders): a run's reservation covers the dearest that can render it. */
  specs?: RoutableBackend[];
  pricing: PriceRules;
}

/**
 * Whether a run's opening found (or made) the job's credit reservation; `ended`: the run had already ended (its ending
 * settled the reservation), which only a first run opening at its GPU slot can find.
 */
export type RunFunding = { ok: true; ended?: true } | { ok: false; message: string };

/**
 * A run's opening: its projection row tied to the run (src/db/projection.ts openRun), then its credit reservation (an
 * operator-restarted run reserves anew). The lifecycle's local activity runs it for a reset run; the GPU activity runs
 * it for a first run, at its slot (GenerationSettings.opensAtSlot). Idempotent: a replayed or retried call changes
 * nothing.
 */
export function createRunOpener({ db, specs, pricing }: Pick<LifecycleDeps, 'db' | 'specs' | 'pricing'>) {
  /** The job must hold a reservation. */
  async function reserveForRun({ jobId, userId, request, runOpenedAt }: RunReservationInput, firstRunAcceptedAt?: string): Promise<RunFunding> {
    try {
      const price = creditsFor(request, pricing);
      const credits = specs ? reservedCredits(price, specs, { ...request, aspect_ratio: request.aspect_ratio ?? '16:9' }) : price;
      const found = await ensureRunReservation(db, { jobId, userId, credits }, runOpenedAt, firstRunAcceptedAt);
      return found === 'ended' ? { ok: true, ended: true } : { ok: true };
    } catch (err) {
      if (err instanceof InsufficientCreditsError) return { ok: false, message: err.message };
      throw err;
    }
  }

  async function open(job: QueuedJob, runOpenedAt: string, firstRunAcceptedAt?: string): Promise<RunFunding> {
    await openRun(db, job, runOpenedAt);
    const { duration_seconds, resolution, priority, aspect_ratio } = job.request;
    const request = { duration_seconds, resolution, aspect_ratio, ...(priority === undefined ? {} : { priority }) };
    return reserveForRun({ jobId: job.jobId, userId: job.userId, request, runOpenedAt }, firstRunAcceptedAt);
  }

  return {
    reserveForRun,
    /** A run's opening in its first step (a reset run's, and every run's started before opensAtSlot). */
    openFundedRun: (job: QueuedJob, runOpenedAt: string) => open(job, runOpenedAt),
    /**
     * A first run's opening at its GPU slot, which may come after the run ended (ensureRunReservation's
     * firstRunAcceptedAt).
     */
    openAtSlot: (job: QueuedJob, runOpenedAt: string) => open(job, runOpenedAt, job.acceptedAt),
  };
}

/** Activities of the generation task queue for a job's ending: deadlines, backend cancellation, credits. */
export function createLifecycleActivities({ db, backend, backends, routing, specs, pricing }: LifecycleDeps) {
  const backendNamed = (name: string | undefined): GenerationBackend => (name === undefined ? backend : (backends?.get(name) ?? backend));

  const { reserveForRun, openFundedRun } = createRunOpener({ db, specs, pricing });

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
    async stopAttempt({ jobId, attempt, backendJobId, backend: name }: { jobId: string; attempt: number; backendJobId: string | null; backend?: string }): Promise<void> {
      await db.execute(sql`select pg_notify(${BACKEND_JOB_CHANNEL}, ${attemptStopKey(jobId, attempt)})`);
      if (backendJobId) await backendNamed(name).cancel(backendJobId);
    },

    /**
     * Where attempt N goes (routing across backends): the cheapest backend that can render the job and is up with a
     * pool above zero, the configured order breaking ties (src/domain/routing.ts). A fact of the moment: the workflow
     * records the answer, so its replay takes the same route.
     */
    async routeAttempt({ jobId, attempt, request, avoid }: RouteAttemptInput): Promise<AttemptRoute> {
      if (!routing) throw new Error('routeAttempt: this worker has one backend (BACKENDS lists one or none)');
      const decision = chooseBackend(routing.specs, await routing.health.states(), request, avoid);
      if (decision.kind === 'none') return decision;
      const pool = routing.pools.find((p) => p.backend === decision.backend)!;
      // Where it waits: should that backend be paused or go down first, a dispatcher asks the job to move (queued-reroutes.ts).
      await recordQueuedRoute(db.$client, { jobId, attempt, backend: decision.backend, alternatives: decision.alternatives });
      return { ...decision, taskQueue: pool.taskQueue };
    },

    /** Aborts a backend job the workflow no longer wants; a job already ended is left as it is. */
    async cancelBackendJob({ backendJobId }: { backendJobId: string }): Promise<void> {
      await backend.cancel(backendJobId);
    },

    /** The reservation step of a run begun before the lean run (LEAN_RUN_PATCH), which replays it as an activity. */
    ensureRunReservation: reserveForRun,

    /** A run's opening as a local activity (a reset run's; a first run opens at its GPU slot): see createRunOpener. */
    async openFundedRun({ input, runOpenedAt }: { input: GenerationInput; runOpenedAt: string }): Promise<RunFunding> {
      return openFundedRun(input, runOpenedAt);
    },

    /** Captures the job's reserved credits on success, releases them otherwise — once, whoever retries. */
    async settleJobCredits({ jobId, succeeded }: { jobId: string; succeeded: boolean }): Promise<string> {
      return settleCredits(db, jobId, succeeded ? 'capture' : 'release');
    },
  };
}
