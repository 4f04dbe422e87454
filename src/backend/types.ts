/**
 * The generation backend's contract, as an adapter the GPU activity talks to. The simulator implements the async HTTP
 * form of it (simulator/); a real provider plugs in behind the same interface.
 */
export type BackendJobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'canceled';

export type BackendErrorCode =
  | 'content_policy_violation' // permanent
  | 'invalid_input' // permanent
  | 'internal_error' // transient
  | 'gpu_unavailable'; // transient

export interface BackendJobError {
  code: BackendErrorCode;
  message: string;
  retryable: boolean;
}

/** The backend's view of one job (wire form: snake_case JSON). */
export interface BackendJob {
  id: string;
  client_key: string;
  status: BackendJobStatus;
  /** 0..1 */
  progress: number;
  video_url: string | null;
  error: BackendJobError | null;
  created_at: string;
  started_at: string | null;
  completed_at: string | null;
}

export interface BackendSubmitRequest {
  /** Idempotency key: the same key always names the same backend job. Derived from our job id and attempt. */
  client_key: string;
  prompt: string;
  duration_seconds: number;
  resolution: string;
  aspect_ratio: string;
  seed: number | null;
  /** An image to start from (image-to-video): an http(s) URL the API checked. Absent for text-to-video. */
  input_reference?: string;
  /** A remix: the earlier job of ours it remixes, and that job's video, to start from. */
  remix_of?: { job_id: string; video_url: string };
  /** Where the backend POSTs signed callbacks; omitted for the synchronous mode. */
  callback_url?: string;
}

export type BackendEventType = 'job.started' | 'job.succeeded' | 'job.failed' | 'job.canceled';

/** Body of a signed callback (Standard Webhooks headers). `sequence` grows per job, so reordering can be detected. */
export interface BackendCallback {
  event_id: string;
  type: BackendEventType;
  sequence: number;
  job: BackendJob;
}

export const TERMINAL_BACKEND_STATUSES: ReadonlySet<BackendJobStatus> = new Set(['succeeded', 'failed', 'canceled']);

/**
 * A backend job past its deadline: its last word if it has just ended (asked once more), else it is canceled. Returns the
 * job as it then stands; `onCancel` is told before the cancel.
 */
export async function endOverdueJob(backend: GenerationBackend, backendJobId: string, onCancel?: () => void): Promise<BackendJob> {
  const job = await backend.getJob(backendJobId);
  if (TERMINAL_BACKEND_STATUSES.has(job.status)) return job;
  onCancel?.();
  return backend.cancel(backendJobId);
}

/** A provider's webhook as it reached us: verified and read by the adapter that asked for it. */
export interface IncomingCallback {
  headers: Record<string, string | string[] | undefined>;
  /** The body exactly as received: signatures are over its bytes. */
  rawBody: string;
  /** The callback URL's query: the adapter put the attempt's client key there when it submitted. */
  query: Record<string, unknown>;
}

/** What a verified provider webhook says, in the simulator's callback terms (the workflow's backend event follows). */
export interface VerifiedCallback {
  eventId: string;
  type: BackendEventType;
  clientKey: string;
  job: Pick<BackendJob, 'id' | 'video_url' | 'error'>;
}

export interface GenerationBackend {
  /** Idempotent by `client_key` (where the provider has no idempotency key, see docs/backends.md). */
  submit(request: BackendSubmitRequest): Promise<BackendJob>;
  getJob(backendJobId: string): Promise<BackendJob>;
  /**
   * For a provider without an idempotency key: the job an earlier, unanswered try of this same submit created (its
   * answer lost to a timeout, or its caller gone mid-call), found at the provider by `request.client_key`, or null.
   * The GPU activity asks before it submits again, and adopts what it finds instead of creating a second job. `since`:
   * no earlier try began before it. Optional: a provider that cannot list its jobs leaves it out (docs/backends.md).
   */
  findSubmitted?(request: BackendSubmitRequest, since: Date): Promise<BackendJob | null>;
  /** Stops the job and answers it as it then stands. A provider without a cancel answers it `canceled` at once: we stop following it. */
  cancel(backendJobId: string): Promise<BackendJob>;
  /** False when the provider has no cancel: a canceled job of ours may run on there to its end, unobserved. */
  readonly cancelStopsWork?: boolean;
  /** Synchronous mode: one call that returns when the job has ended. Idempotent by `client_key`. */
  generate?(request: BackendSubmitRequest, signal?: AbortSignal): Promise<BackendJob>;
  /**
   * Providers that sign webhooks of their own (POSTed to /internal/backend/callbacks/<backend name>): verifies one and
   * reads it, throwing WebhookVerificationError (src/lib/webhook-signature.ts) when its signature does not hold.
   */
  verifyCallback?(callback: IncomingCallback): Promise<VerifiedCallback>;
  /**
   * A cheap check that the backend answers, for routing (src/dispatch/backend-health.ts): resolves when it does, throws
   * when it does not. Optional: a backend without one is judged by its circuit alone (consecutive failed calls).
   */
  health?(): Promise<void>;
}

/** A backend HTTP failure that is worth retrying (5xx, timeout, connection refused). */
export class BackendUnavailableError extends Error {
  constructor(message: string, readonly status?: number) {
    super(message);
    this.name = 'BackendUnavailableError';
  }
}

/** A 4xx from the backend for a request we sent: retrying the same request will not help. */
export class BackendRejectedError extends Error {
  constructor(message: string, readonly status: number, readonly code?: string) {
    super(message);
    this.name = 'BackendRejectedError';
  }
}

/** The backend does not know a job it gave us (a restart that kept nothing, an expiry): the job is lost, not refused. */
export const isJobNotFound = (err: unknown): boolean => err instanceof BackendRejectedError && err.status === 404;
