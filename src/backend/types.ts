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

export interface GenerationBackend {
  /** Idempotent by `client_key`. */
  submit(request: BackendSubmitRequest): Promise<BackendJob>;
  getJob(backendJobId: string): Promise<BackendJob>;
  cancel(backendJobId: string): Promise<BackendJob>;
  /** Synchronous mode: one call that returns when the job has ended. Idempotent by `client_key`. */
  generate?(request: BackendSubmitRequest, signal?: AbortSignal): Promise<BackendJob>;
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
