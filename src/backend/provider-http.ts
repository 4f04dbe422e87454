import { cannotRender, type BackendRenders } from '../domain/backend-specs';
import { renderRequestOf } from '../domain/render-request';
import { describeHttpError, HttpTimeoutError, JSON_BODY_HEADERS, JSON_HEADERS, type HttpSend } from './http-client';
import { BackendRejectedError, BackendUnavailableError, type BackendJob, type BackendJobError, type BackendJobStatus, type BackendSubmitRequest } from './types';

/**
 * What every provider adapter shares: one JSON call whose failures come out as the two errors the GPU activity knows
 * (BackendUnavailableError: worth retrying; BackendRejectedError: this request is wrong), and the job they all answer.
 */
export interface ProviderCall {
  method: string;
  url: string;
  headers?: Record<string, string>;
  body?: unknown;
  timeoutMs: number;
  send: HttpSend;
}

// 408 and 429 say "later", not "wrong". 401 and 403 say our key is refused: an operator's fix, not the job's fault, so
// the attempt fails as the backend being unavailable rather than as the user's invalid input.
const RETRYABLE_CLIENT_STATUSES = new Set([401, 403, 408, 429]);

export async function callProvider<T = unknown>({ method, url, headers = {}, body, timeoutMs, send }: ProviderCall): Promise<{ status: number; json: T }> {
  const what = `${method} ${new URL(url).pathname}`;
  let status: number;
  let text: string;
  try {
    ({ status, text } = await send({
      method,
      url,
      headers: { ...(body === undefined ? JSON_HEADERS : JSON_BODY_HEADERS), ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      timeoutMs,
    }));
  } catch (err) {
    if (err instanceof HttpTimeoutError) throw new BackendUnavailableError(`backend timed out after ${timeoutMs}ms: ${what}`);
    throw new BackendUnavailableError(`backend unreachable: ${what}: ${describeHttpError(err)}`);
  }
  let json: unknown;
  try {
    json = text === '' ? null : JSON.parse(text);
  } catch {
    json = undefined;
  }
  if (status >= 200 && status < 300) {
    if (json === undefined) throw new BackendUnavailableError(`backend answered ${what} with a body that is not JSON`, status);
    return { status, json: json as T };
  }
  const detail = `backend answered ${status} to ${what}${describeError(json)}`;
  if (status >= 400 && status < 500 && !RETRYABLE_CLIENT_STATUSES.has(status)) throw new BackendRejectedError(detail, status, 'invalid_input');
  throw new BackendUnavailableError(detail, status);
}

/** A provider's error body, in a few words (`detail`, `error`, `error.message`, `title`). */
function describeError(json: unknown): string {
  if (!json || typeof json !== 'object') return '';
  const body = json as Record<string, unknown>;
  const nested = body.error && typeof body.error === 'object' ? (body.error as Record<string, unknown>).message : undefined;
  const text = [body.detail, nested, body.error, body.title].find((v) => typeof v === 'string');
  return typeof text === 'string' ? `: ${text.slice(0, 300)}` : '';
}

/** Refuses, before anything is sent, a request the backend is configured not to render. */
export function checkRenders(backendName: string, renders: BackendRenders, request: BackendSubmitRequest): void {
  const why = cannotRender(renders, renderRequestOf(request));
  if (why) throw new BackendRejectedError(`backend ${backendName} cannot render ${why}`, 422, 'invalid_input');
}

export function backendJob(fields: {
  id: string;
  status: BackendJobStatus;
  clientKey?: string;
  progress?: number;
  videoUrl?: string | null;
  error?: BackendJobError | null;
  createdAt?: string | null;
  startedAt?: string | null;
  completedAt?: string | null;
}): BackendJob {
  const terminal = fields.status === 'succeeded' || fields.status === 'failed' || fields.status === 'canceled';
  return {
    id: fields.id,
    client_key: fields.clientKey ?? '',
    status: fields.status,
    progress: fields.status === 'succeeded' ? 1 : Math.max(0, Math.min(1, fields.progress ?? 0)),
    video_url: fields.videoUrl ?? null,
    error: fields.error ?? null,
    created_at: fields.createdAt ?? new Date().toISOString(),
    started_at: fields.startedAt ?? null,
    completed_at: fields.completedAt ?? (terminal ? new Date().toISOString() : null),
  };
}

export const jobError = (code: BackendJobError['code'], message: string): BackendJobError => ({
  code,
  message: message.slice(0, 500),
  retryable: code === 'internal_error' || code === 'gpu_unavailable',
});

/**
 * Reads a provider's free-text failure into our codes: a safety filter is the user's content, a malformed input theirs
 * too (neither worth another attempt); running out of GPUs or memory is the provider's and worth one; anything else is
 * an internal error, also worth one.
 */
export function classifyFailure(message: string): BackendJobError {
  if (/nsfw|safety|content.?polic|moderation|flagged|prohibited|responsible ai|\brai\b/i.test(message)) return jobError('content_policy_violation', message);
  if (/out.of.memory|\boom\b|cuda error|no (gpu|capacity)|capacity|overloaded|resource.?exhausted/i.test(message)) return jobError('gpu_unavailable', message);
  if (/invalid|validation|must be|is required|unprocessable|not supported/i.test(message)) return jobError('invalid_input', message);
  return jobError('internal_error', message);
}

/** The first http(s) URL in a provider's output (a string, a list of them, or objects with `url`/`uri`). */
export function firstUrl(output: unknown): string | null {
  if (typeof output === 'string') return /^https?:\/\//.test(output) ? output : null;
  if (Array.isArray(output)) {
    for (const item of output) {
      const url = firstUrl(item);
      if (url) return url;
    }
    return null;
  }
  if (output && typeof output === 'object') {
    const record = output as Record<string, unknown>;
    for (const key of ['url', 'uri', 'video', 'videos', 'output']) {
      const url = key in record ? firstUrl(record[key]) : null;
      if (url) return url;
    }
  }
  return null;
}

/** The callback URL of one attempt: the backend's own path, with the attempt's client key to find the job again. */
export function attemptCallbackUrl(callbackUrl: string, clientKey: string): string {
  const url = new URL(callbackUrl);
  url.searchParams.set('client_key', clientKey);
  return url.toString();
}

/** The client key in a webhook URL attemptCallbackUrl built ('' when there is none, or the URL is not one). */
export function clientKeyInUrl(url: string): string {
  try {
    return new URL(url).searchParams.get('client_key') ?? '';
  } catch {
    return '';
  }
}

export function clientKeyOf(query: Record<string, unknown>): string {
  const key = query.client_key;
  return typeof key === 'string' ? key : '';
}

export function headerOf(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  const value = headers[name.toLowerCase()];
  return Array.isArray(value) ? value[0] : value;
}
