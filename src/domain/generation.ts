import type { GenerationError } from './generation-errors';
import type { GenerationStatus } from './generation-state';

/** What a user asks for (validated at the API; wire names are snake_case). */
export interface GenerationRequest {
  prompt: string;
  duration_seconds: number;
  resolution: '480p' | '720p' | '1080p';
  aspect_ratio: '16:9' | '9:16' | '1:1';
  seed: number | null;
  webhook_url: string | null;
  metadata: Record<string, string>;
  /** The client's own limits, within the server's (absent: the server's). */
  max_queue_seconds?: number;
  max_run_seconds?: number;
  /**
   * The job's lane; absent is interactive. The API keeps only `batch` (an interactive request carries no field), so an
   * interactive request hashes, prices and runs exactly as one made before lanes existed (see priorityOf).
   */
  priority?: Priority;
  /**
   * An image to start from (image-to-video): an http(s) URL the API checked before admission. Absent unless given, like
   * remix_of, so a request without them hashes as before.
   */
  input_reference?: string;
  /** One of the user's succeeded jobs whose video the backend starts from (the API checked it before admission). */
  remix_of?: string;
}

/** The lanes of the GPU queue: interactive jobs go first, batch jobs wait while any interactive job waits. */
export const PRIORITIES = ['interactive', 'batch'] as const;
export type Priority = (typeof PRIORITIES)[number];

/** A request's lane: one without the field (every request made before lanes) is interactive. */
export function priorityOf(request: Pick<GenerationRequest, 'priority'>): Priority {
  return request.priority === 'batch' ? 'batch' : 'interactive';
}

/** Settings the API hands each workflow, so timing knobs are injected rather than read inside the workflow. */
export interface GenerationSettings {
  gpuTaskQueue: string;
  fairnessWeight: number;
  /**
   * Temporal priority key of the job's tasks (1 first … 5 last; unset is 3). A job admitted while its user had no other
   * job queued or running in its lane gets its lane's raised level (see firstJobPriority); batch jobs take 4 and 5.
   */
  priorityKey?: number;
  heartbeatTimeoutMs: number;
  maxAttempts: number;
  retryBackoffMs: number;
  /** Longest a job may wait for a GPU slot before it fails with queue_timeout. */
  maxQueueMs: number;
  /** Longest one attempt may run on a GPU (scaled to the request) before it fails with generation_timeout. */
  maxRunMs: number;
  /** How long one attempt should take (scaled to the request); past it the job is listed as stuck. */
  expectedRunMs: number;
  /**
   * Set on every run started since 2026-12-07: the run is lean (the workflow's LEAN_RUN_PATCH) by its input. A run started
   * before asks `patched()`, which records a marker and upserts Temporal's `TemporalChangeVersion` search attribute: two
   * billable actions and two history events in every run, for a question whose answer no run of this code can change.
   * docs/decisions.md ("Engine cost per job").
   */
  lean?: true;
  /**
   * Set when the deployment has more than one backend: each attempt is routed (src/domain/routing.ts) and runs on its
   * backend's own `gpu` task queue. Unset (one backend, or a run started before routing): every attempt on gpuTaskQueue.
   */
  routing?: true;
  /**
   * Set on every run started without routing: the run, if it is the workflow's first (not a reset), opens at its GPU slot.
   * Its GPU activity ties the queued row to the run and finds the submit's reservation before it submits, instead of a
   * local activity in the run's first workflow task, whose result was a workflow activation of its own. A reset run, a
   * routed one (its queued reroutes need its row opened) and one started before this setting open first.
   * docs/decisions.md ("Worker CPU per job", ninth pass).
   */
  opensAtSlot?: true;
  /**
   * Set on every run started without routing: a success the backend's callback reports ends the run without waiting for
   * its GPU activity to close. The activity, woken by that same callback (the API signals the run before it wakes the
   * dispatcher), frees its slot and completes without a report (GpuAttemptInput.quietOnHeardSuccess), so no event and no
   * workflow task follow the run's ending for it. docs/decisions.md ("Worker CPU per job", tenth pass).
   */
  endsOnHeardSuccess?: true;
}

export interface GenerationInput {
  jobId: string;
  userId: string;
  tier: string;
  request: GenerationRequest;
  /** ISO time the API accepted the job; the projection's created_at. */
  acceptedAt: string;
  settings: GenerationSettings;
  /** The job this one reruns (POST /v1/generations/:id/retry): its queued row's retry_of. */
  retryOf?: string;
}

/** Temporal's default priority level, and the one above it that a user's only active job takes. */
export const DEFAULT_PRIORITY = 3;
export const FIRST_JOB_PRIORITY = 2;
/**
 * The batch lane's two levels, both below every interactive one: Temporal's priority keys are strict, so a batch task
 * is dispatched only while no interactive task waits. Inside the lane, as inside the interactive one, a user's only
 * active batch job goes one level up, and fairness keys (user, tier weight) share the rest.
 */
export const BATCH_FIRST_JOB_PRIORITY = 4;
export const BATCH_PRIORITY = 5;
/** The levels a user's first job in a lane takes (claim-interceptor.ts hands one back when its raise is spent). */
export const RAISED_PRIORITIES: ReadonlyMap<number, Priority> = new Map([
  [FIRST_JOB_PRIORITY, 'interactive'],
  [BATCH_FIRST_JOB_PRIORITY, 'batch'],
]);

/**
 * A user with nothing queued or running goes ahead of other users' backlogs: the next free GPU slot is theirs. Temporal's
 * fairness alone cannot promise that on an idle queue: the tasks a free slot takes at once (sync match) never reach the
 * fairness counter, so a flood's first waiting task ties a newcomer's and wins on age (docs/decisions.md). A user holds at
 * most one such job at a time, so the level above is bounded by the number of users, each with one job.
 */
export function firstJobPriority(activeBefore: number, enabled: boolean, priority: Priority = 'interactive'): number {
  const first = enabled && activeBefore === 0;
  if (priority === 'batch') return first ? BATCH_FIRST_JOB_PRIORITY : BATCH_PRIORITY;
  return first ? FIRST_JOB_PRIORITY : DEFAULT_PRIORITY;
}

/** One write to the projection. Monotonic by (rank, attempt, progress): older writes never overwrite newer ones. */
export interface ProjectionWrite {
  jobId: string;
  /** The workflow run the write comes from (see openRun); omitted only by the reconciler, which speaks for the latest run. */
  runOpenedAt?: string;
  status: GenerationStatus;
  attempt: number;
  progress: number;
  backendJobId?: string | null;
  /** The backend the attempt runs on (set when routing across backends). */
  backend?: string | null;
  /** The backend the job left because it was down or paused. */
  failedOverFrom?: string | null;
  /** Temporal identity of the GPU dispatcher holding the attempt. */
  dispatcher?: string | null;
  /** ISO time the attempt should have ended by (for the stuck-job listing). */
  expectedDoneAt?: string | null;
  videoUrl?: string | null;
  error?: GenerationError | null;
  /** ISO timestamps; set once, the first writer wins. */
  startedAt?: string | null;
  completedAt?: string | null;
}

/** The projection write that records a workflow's final state (by the workflow itself, or by the reconciler from its result). */
export function endingWrite(state: GenerationState, completedAt: string): ProjectionWrite {
  return {
    jobId: state.jobId,
    runOpenedAt: state.runOpenedAt,
    status: state.status,
    attempt: state.attempt,
    progress: state.status === 'succeeded' ? 1 : 0,
    backendJobId: state.backendJobId,
    videoUrl: state.videoUrl,
    error: state.error,
    completedAt,
    ...(state.backend ? { backend: state.backend } : {}),
    ...(state.failedOverFrom ? { failedOverFrom: state.failedOverFrom } : {}),
  };
}

/** What the GPU activity returns when the backend job has ended. */
export interface GpuAttemptResult {
  backendJobId: string;
  status: 'succeeded' | 'failed' | 'canceled';
  videoUrl: string | null;
  error: { code: string; message: string } | null;
}

/** The workflow's answer to the state query, and its return value. */
export interface GenerationState {
  jobId: string;
  /** The workflow run's clock at its first step: the projection's run marker. */
  runOpenedAt: string;
  status: GenerationStatus;
  attempt: number;
  backendJobId: string | null;
  videoUrl: string | null;
  error: GenerationError | null;
  /** Routed runs only (GenerationSettings.routing): the backend of the latest attempt that reached one. */
  backend?: string | null;
  /** Routed runs only: the backend the job left because it was down or paused (a failover), else null. */
  failedOverFrom?: string | null;
}

/** A workflow run's short tag (its opening time in ms): backend keys and events name the run they belong to. */
export function runTag(runOpenedAt: string): string {
  return String(Date.parse(runOpenedAt));
}

/**
 * The backend's key for attempt N of a job's run: the same attempt always names the same backend job, and a run an
 * operator restarts (a reset) gets backend jobs of its own.
 */
export function backendClientKey(jobId: string, runOpenedAt: string, attempt: number): string {
  return `${jobId}:run:${runTag(runOpenedAt)}:attempt:${attempt}`;
}

export function parseBackendClientKey(clientKey: string): { jobId: string; run: string; attempt: number } | null {
  const match = /^(.+):run:(\d+):attempt:(\d+)$/.exec(clientKey);
  return match ? { jobId: match[1], run: match[2], attempt: Number(match[3]) } : null;
}
