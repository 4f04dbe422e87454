import { z } from 'zod';
import type { BackendRenders } from '../domain/backend-specs';
import { describeHttpError, HttpTimeoutError, idleTimedOut, JSON_BODY_HEADERS, JSON_HEADERS, PLAIN_HEADERS, sendHttp, type HttpSend } from './http-client';
import { checkRenders } from './provider-http';
import {
  BackendRejectedError,
  BackendUnavailableError,
  type BackendJob,
  type BackendSubmitRequest,
  type GenerationBackend,
} from './types';

/**
 * The generation backend over HTTP (the simulator's API, and any provider that speaks it). Every failure comes out as
 * one of two errors: BackendUnavailableError (worth retrying) or BackendRejectedError (the request itself is wrong).
 */
export interface HttpGenerationBackendOptions {
  baseUrl: string;
  /** What the backend is configured to render (BACKENDS' `renders`) and its name; unset: anything. */
  renders?: { name: string; renders: BackendRenders };
  /** Per-request deadline for submit, getJob and cancel; 0 disables it. generate() waits as long as the job runs. */
  timeoutMs: number;
  /** How requests are sent (tests inject failures); undici over a keep-alive agent by default. */
  send?: HttpSend;
}

const backendJobSchema = z.object({
  id: z.string(),
  client_key: z.string(),
  status: z.enum(['queued', 'running', 'succeeded', 'failed', 'canceled']),
  progress: z.number(),
  video_url: z.string().nullable(),
  error: z
    .object({
      code: z.enum(['content_policy_violation', 'invalid_input', 'internal_error', 'gpu_unavailable']),
      message: z.string(),
      retryable: z.boolean(),
    })
    .nullable(),
  created_at: z.string(),
  started_at: z.string().nullable(),
  completed_at: z.string().nullable(),
});

const errorBodySchema = z.object({ error: z.object({ code: z.string().optional(), message: z.string().optional() }) });

/** Still a BackendUnavailableError (same name) to everyone else; generate() alone treats it as "ask again". */
class IdleTimeoutError extends BackendUnavailableError {}

// 408 and 429 are 4xx but say "try again later", not "this request is wrong".
const RETRYABLE_CLIENT_STATUSES = new Set([408, 429]);

interface RequestOptions {
  body?: unknown;
  signal?: AbortSignal;
  timeoutMs: number;
}

export class HttpGenerationBackend implements GenerationBackend {
  private readonly baseUrl: string;
  private readonly timeoutMs: number;
  private readonly send: HttpSend;
  private readonly renders: HttpGenerationBackendOptions['renders'];

  constructor(options: HttpGenerationBackendOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '');
    this.renders = options.renders;
    this.timeoutMs = options.timeoutMs;
    this.send = options.send ?? sendHttp;
  }

  async submit(request: BackendSubmitRequest): Promise<BackendJob> {
    if (this.renders) checkRenders(this.renders.name, this.renders.renders, request);
    return this.call('POST', '/v1/jobs', { body: request, timeoutMs: this.timeoutMs });
  }

  getJob(backendJobId: string): Promise<BackendJob> {
    return this.call('GET', `/v1/jobs/${encodeURIComponent(backendJobId)}`, { timeoutMs: this.timeoutMs });
  }

  cancel(backendJobId: string): Promise<BackendJob> {
    return this.call('POST', `/v1/jobs/${encodeURIComponent(backendJobId)}/cancel`, { timeoutMs: this.timeoutMs });
  }

  /** The simulator's liveness route: it answers, or the backend is unreachable. (An outage answers it: the circuit sees that.) */
  async health(): Promise<void> {
    let status: number;
    try {
      ({ status } = await this.send({ method: 'GET', url: `${this.baseUrl}/healthz`, headers: PLAIN_HEADERS, timeoutMs: this.timeoutMs }));
    } catch (err) {
      throw new BackendUnavailableError(`backend unreachable: GET /healthz: ${describeHttpError(err)}`);
    }
    if (status < 200 || status >= 300) throw new BackendUnavailableError(`backend answered ${status} to GET /healthz`, status);
  }

  /** Waits for the job to end; aborting `signal` rejects with its reason and leaves the job running on the backend. */
  async generate(request: BackendSubmitRequest, signal?: AbortSignal): Promise<BackendJob> {
    if (this.renders) checkRenders(this.renders.name, this.renders.renders, request);
    const body: BackendSubmitRequest = { ...request };
    delete body.callback_url;
    for (;;) {
      try {
        return await this.call('POST', '/v1/generate', { body, signal, timeoutMs: 0 });
      } catch (err) {
        // undici gives up on a silent response after its own idle limit (300s); the same client_key re-attaches.
        if (!(err instanceof IdleTimeoutError)) throw err;
      }
    }
  }

  private async call(method: string, path: string, options: RequestOptions): Promise<BackendJob> {
    const what = `${method} ${path}`;
    let status: number;
    let text: string;
    try {
      ({ status, text } = await this.send({
        method,
        url: this.baseUrl + path,
        headers: options.body === undefined ? JSON_HEADERS : JSON_BODY_HEADERS,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        timeoutMs: options.timeoutMs,
        signal: options.signal,
      }));
    } catch (err) {
      // The caller's own cancellation is not a backend failure: hand its reason back unchanged.
      if (options.signal?.aborted) throw options.signal.reason;
      if (err instanceof HttpTimeoutError) throw new BackendUnavailableError(`backend timed out after ${options.timeoutMs}ms: ${what}`);
      const message = `backend unreachable: ${what}: ${describeHttpError(err)}`;
      throw idleTimedOut(err) ? new IdleTimeoutError(message) : new BackendUnavailableError(message);
    }

    if (status >= 200 && status < 300) return parseJob(text, what, status);
    const { code, message } = parseError(text);
    const detail = `backend answered ${status} to ${what}${message ? `: ${message}` : ''}`;
    if (status >= 400 && status < 500 && !RETRYABLE_CLIENT_STATUSES.has(status)) {
      throw new BackendRejectedError(detail, status, code);
    }
    throw new BackendUnavailableError(detail, status);
  }
}

function parseJob(text: string, what: string, status: number): BackendJob {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new BackendUnavailableError(`backend answered ${what} with a body that is not JSON`, status);
  }
  const parsed = backendJobSchema.safeParse(json);
  if (!parsed.success) throw new BackendUnavailableError(`backend answered ${what} with a malformed job`, status);
  return parsed.data;
}

function parseError(text: string): { code?: string; message?: string } {
  try {
    const parsed = errorBodySchema.safeParse(JSON.parse(text));
    return parsed.success ? parsed.data.error : {};
  } catch {
    return {};
  }
}
