import { EventEmitter } from 'node:events';
import { Agent, request } from 'undici';

/**
 * The backends' HTTP: one request, its whole answer read as text. Sent with undici's `request` over one keep-alive
 * `Agent` per process rather than `fetch`, which wraps every call in WHATWG streams, `Headers`, a `Response` and its
 * abort signals: the dispatcher makes one call per poll of every running job, and fetch's wrapping cost several times
 * the call itself (docs/decisions.md, "Worker CPU per job"). What fetch did that a backend could see is kept: redirects
 * are followed (up to 20, as fetch does), the idle limits are undici's own (300 s for headers and between body chunks),
 * and the calls are traced through undici's diagnostics channel as fetch's were.
 */
export interface HttpRequest {
  method: string;
  url: string;
  headers: Record<string, string>;
  body?: string;
  /** The whole call's deadline, answer read; 0: none (undici's idle limits still apply). */
  timeoutMs: number;
  /** The caller's cancellation: the call rejects with its reason. */
  signal?: AbortSignal;
}

export interface HttpAnswer {
  status: number;
  text: string;
}

/**
 * Sends one request. Rejects with the caller's signal's reason when it aborted, an HttpTimeoutError past the deadline,
 * and otherwise with the transport's own error (an `UND_ERR_*` or socket `code` on it or on its cause). The adapters take
 * another in their options (tests inject failures through it).
 */
export type HttpSend = (request: HttpRequest) => Promise<HttpAnswer>;

export class HttpTimeoutError extends Error {
  constructor(readonly timeoutMs: number) {
    super(`timed out after ${timeoutMs}ms`);
    this.name = 'HttpTimeoutError';
  }
}

/** undici's own limits on waiting for headers or the next body chunk (300 s by default). */
const IDLE_TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT']);

/** Whether the call was cut by undici's idle limit (a silent answer), rather than refused or timed out by us. */
export function idleTimedOut(err: unknown): boolean {
  return IDLE_TIMEOUT_CODES.has(errorCode(err) ?? '') || IDLE_TIMEOUT_CODES.has(errorCode((err as { cause?: unknown } | null)?.cause) ?? '');
}

function errorCode(err: unknown): string | undefined {
  const code = (err as { code?: unknown } | null | undefined)?.code;
  return typeof code === 'string' ? code : undefined;
}

/** A transport error in a few words: its message, and its cause's when it has one (fetch's `fetch failed (…)`). */
export function describeHttpError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const cause = (err as Error & { cause?: unknown }).cause;
  return cause instanceof Error ? `${err.message} (${cause.message})` : err.message;
}

/** fetch's user agent, which the backends saw before; with JSON asked for, and with a JSON body sent. */
export const PLAIN_HEADERS: Readonly<Record<string, string>> = { 'user-agent': 'node' };
export const JSON_HEADERS: Readonly<Record<string, string>> = { ...PLAIN_HEADERS, accept: 'application/json' };
export const JSON_BODY_HEADERS: Readonly<Record<string, string>> = { ...JSON_HEADERS, 'content-type': 'application/json' };

let agent: Agent | undefined;

/** The process's keep-alive connections to the backends, made at the first call. */
function sharedAgent(): Agent {
  agent ??= new Agent();
  return agent;
}

const MAX_REDIRECTIONS = 20;

export const sendHttp: HttpSend = async ({ method, url, headers, body, timeoutMs, signal }) => {
  if (signal?.aborted) throw signal.reason;
  // undici takes an emitter of 'abort' as the request's signal: cheaper than an AbortController (whose signal costs
  // more to make than the rest of the call's set-up) for the deadline that nearly every call has and nearly none reaches.
  const abort = timeoutMs > 0 || signal ? new EventEmitter() : undefined;
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  if (abort && timeoutMs > 0) {
    timer = setTimeout(() => {
      timedOut = true;
      abort.emit('abort');
    }, timeoutMs);
    timer.unref();
  }
  const onAbort = signal && abort ? () => abort.emit('abort') : undefined;
  if (onAbort) signal!.addEventListener('abort', onAbort, { once: true });
  try {
    const response = await request(url, {
      method: method as 'GET',
      headers,
      body,
      signal: abort,
      dispatcher: sharedAgent(),
      maxRedirections: MAX_REDIRECTIONS,
    });
    const text = await response.body.text();
    return { status: response.statusCode, text };
  } catch (err) {
    if (signal?.aborted) throw signal.reason;
    if (timedOut) throw new HttpTimeoutError(timeoutMs);
    throw err;
  } finally {
    if (timer) clearTimeout(timer);
    if (onAbort) signal!.removeEventListener('abort', onAbort);
  }
};
