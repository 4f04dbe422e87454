import createClient, { type Client } from 'openapi-fetch';
import { retryAfterSeconds, VideogenError } from './errors.js';
import type { paths } from './schema.js';
import { readSse } from './sse.js';
import {
  isTerminal,
  type Batch,
  type BatchList,
  type CreateBatchRequest,
  type CreateGenerationRequest,
  type ListBatchesQuery,
  type Generation,
  type GenerationEstimate,
  type GenerationList,
  type ListGenerationsQuery,
  type Notification,
  type NotificationList,
  type NotificationsQuery,
  type NotificationSettings,
  type NotificationSettingsRequest,
  type StreamEvent,
  type Usage,
  type WebhookEvent,
} from './types.js';
import { verifyWebhook, type VerifyOptions, type WebhookHeaders } from './webhooks.js';

export interface RateLimitRetry {
  /** Retries of one request after a 429 (default 3). */
  maxRetries?: number;
  /** A Retry-After longer than this is not waited for: the 429 is thrown (default 60 s). */
  maxDelaySeconds?: number;
}

export interface VideogenClientOptions {
  /** The API's origin, e.g. `http://127.0.0.1:3000`. */
  baseUrl: string;
  apiKey: string;
  /** Retry a 429 after its Retry-After (a refused request did nothing, so any request may be retried). Off by default. */
  retryRateLimited?: boolean | RateLimitRetry;
  fetch?: typeof fetch;
}

export interface RequestOptions {
  signal?: AbortSignal;
}

export interface SubmitOptions extends RequestOptions {
  /** Makes the submit safe to repeat: the same key and body return the same job. One is made when none is given. */
  idempotencyKey?: string;
}

export interface WaitOptions extends SubmitOptions {
  /** How long to wait for the job to end, in seconds (default 600); then the job is returned as it is. */
  timeoutSeconds?: number;
}

export interface EventsOptions extends RequestOptions {
  /** Only this generation's events, from its first (GET /v1/generations/{id}/events); else all of mine from now. */
  generationId?: string;
  /** Resume after this event id. */
  lastEventId?: string;
  /** Reconnect after a dropped connection or a 5xx, resuming with Last-Event-ID (default true). */
  reconnect?: boolean;
  /** Told `true` each time a connection is up, `false` each time one is lost or cannot be made (a page's "Live" badge). */
  onConnection?: (open: boolean) => void;
}

const MAX_PREFER_WAIT_SECONDS = 60;
const MAX_RECONNECT_DELAY_MS = 30_000;
const WAIT_REFUSALS = new Set(['too_many_waits', 'wait_capacity_reached']);

/** Random hex from getRandomValues, which (unlike randomUUID) a page served over plain http also has. */
export function newIdempotencyKey(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A fetch that waits out a 429's Retry-After and sends the request again, at most `maxRetries` times. */
function retryingFetch(base: typeof fetch, { maxRetries = 3, maxDelaySeconds = 60 }: RateLimitRetry): typeof fetch {
  return async (input, init) => {
    const request = input instanceof Request ? input : new Request(input, init);
    for (let retries = 0; ; retries++) {
      const response = await base(request.clone(), init);
      if (response.status !== 429 || retries >= maxRetries) return response;
      const delay = retryAfterSeconds(response.headers) ?? 1;
      if (delay > maxDelaySeconds) return response;
      await response.body?.cancel();
      await sleep(delay * 1000, request.signal);
    }
  };
}

/** An AbortSignal that fires when any of `signals` does. */
function anySignal(...signals: Array<AbortSignal | undefined>): AbortController {
  const controller = new AbortController();
  for (const signal of signals) {
    if (!signal) continue;
    if (signal.aborted) controller.abort(signal.reason);
    else signal.addEventListener('abort', () => controller.abort(signal.reason), { once: true });
  }
  return controller;
}

type Result<T> = { data?: T; error?: unknown; response: Response };

/** The data of a 2xx answer; any other answer is thrown as a VideogenError. */
async function ok<T>(pending: Promise<Result<T>>): Promise<{ data: T; response: Response }> {
  const { data, error, response } = await pending;
  if (!response.ok) throw VideogenError.from(response, error);
  return { data: data as T, response };
}

export type VideogenClient = ReturnType<typeof createVideogenClient>;

/**
 * A client of the videogen API. Every call is typed from the OpenAPI document (src/schema.ts, generated); every error
 * answer is thrown as a VideogenError.
 */
export function createVideogenClient(options: VideogenClientOptions) {
  const baseFetch = options.fetch ?? globalThis.fetch.bind(globalThis);
  const retry = options.retryRateLimited === true ? {} : options.retryRateLimited || undefined;
  const http: Client<paths> = createClient<paths>({
    baseUrl: options.baseUrl.replace(/\/+$/, ''),
    headers: { authorization: `Bearer ${options.apiKey}` },
    fetch: retry ? retryingFetch(baseFetch, retry) : baseFetch,
  });

  async function create(body: CreateGenerationRequest, { idempotencyKey = newIdempotencyKey(), signal }: SubmitOptions = {}): Promise<Generation> {
    const { data } = await ok(http.POST('/v1/generations', { body, params: { header: { 'Idempotency-Key': idempotencyKey } }, signal }));
    return data;
  }

  async function get(id: string, { waitSeconds, signal }: RequestOptions & { waitSeconds?: number } = {}): Promise<Generation> {
    const header = waitSeconds ? { Prefer: `wait=${waitSeconds}` } : undefined;
    const { data } = await ok(http.GET('/v1/generations/{id}', { params: { path: { id }, header }, signal }));
    return data;
  }

  async function listPage(query: ListGenerationsQuery = {}, { signal }: RequestOptions = {}): Promise<GenerationList> {
    const { data } = await ok(http.GET('/v1/generations', { params: { query }, signal }));
    return data;
  }

  /** Every generation matching `query`, newest first, page after page (`query.limit` is the page size). */
  async function* list(query: Omit<ListGenerationsQuery, 'cursor'> = {}, { signal }: RequestOptions = {}): AsyncGenerator<Generation, void, undefined> {
    let cursor: string | undefined;
    for (;;) {
      const page = await listPage({ ...query, cursor }, { signal });
      yield* page.data;
      if (!page.has_more || !page.next_cursor) return;
      cursor = page.next_cursor;
    }
  }

  async function cancel(id: string, { signal }: RequestOptions = {}): Promise<Generation> {
    const { data } = await ok(http.POST('/v1/generations/{id}/cancel', { params: { path: { id } }, signal }));
    return data;
  }

  async function retryGeneration(id: string, { idempotencyKey = newIdempotencyKey(), signal }: SubmitOptions = {}): Promise<Generation> {
    const { data } = await ok(http.POST('/v1/generations/{id}/retry', { params: { path: { id }, header: { 'Idempotency-Key': idempotencyKey } }, signal }));
    return data;
  }

  async function estimate(body: CreateGenerationRequest, { signal }: RequestOptions = {}): Promise<GenerationEstimate> {
    const { data } = await ok(http.POST('/v1/generations/estimate', { body, signal }));
    return data;
  }

  /**
   * Submits and resolves once the job ended, or with the job as it is after `timeoutSeconds`. The submit itself waits
   * (Prefer: wait, up to 60 s); a job still going after that is followed on its event stream, which replays the job's
   * events from its first, so an end between the two is not missed.
   */
  async function createAndWait(body: CreateGenerationRequest, { timeoutSeconds = 600, idempotencyKey = newIdempotencyKey(), signal }: WaitOptions = {}): Promise<Generation> {
    const deadline = Date.now() + timeoutSeconds * 1000;
    const wait = Math.max(1, Math.min(MAX_PREFER_WAIT_SECONDS, Math.floor(timeoutSeconds)));
    const submit = (prefer: boolean) =>
      ok(http.POST('/v1/generations', { body, params: { header: { 'Idempotency-Key': idempotencyKey, ...(prefer ? { Prefer: `wait=${wait}` } : {}) } }, signal }));
    let job: Generation;
    try {
      job = (await submit(true)).data;
    } catch (err) {
      // Too many waits open: nothing was submitted; submit without the preference and follow the stream.
      if (!(err instanceof VideogenError && WAIT_REFUSALS.has(err.code))) throw err;
      job = (await submit(false)).data;
    }
    if (isTerminal(job.status) || Date.now() >= deadline) return job;
    const timeout = anySignal(signal);
    const timer = setTimeout(() => timeout.abort(), deadline - Date.now());
    try {
      for await (const event of events({ generationId: job.id, signal: timeout.signal })) {
        if ('status' in event.data && isTerminal(event.data.status)) break;
      }
    } catch (err) {
      if (!timeout.signal.aborted || signal?.aborted) throw err;
    } finally {
      clearTimeout(timer);
    }
    return get(job.id, { signal });
  }

  /**
   * The event stream as a typed async iterator. A dropped connection (or a 5xx) is reconnected with Last-Event-ID after
   * the delay the server's `retry:` asks, so no event with an id is lost; it ends when the server ends the stream with
   * `stream.closed`, when `signal` aborts, or when the loop breaks. Other error answers (401, 404, a 429 not retried)
   * are thrown as VideogenError.
   */
  async function* events({ generationId, lastEventId, reconnect = true, onConnection, signal }: EventsOptions = {}): AsyncGenerator<StreamEvent, void, undefined> {
    const controller = anySignal(signal);
    let last = lastEventId;
    let delay = 1000;
    let failures = 0;
    try {
      while (!controller.signal.aborted) {
        try {
          const header = last ? { 'Last-Event-ID': last } : undefined;
          const pending = generationId
            ? http.GET('/v1/generations/{id}/events', { params: { path: { id: generationId }, header }, parseAs: 'stream', signal: controller.signal })
            : http.GET('/v1/events', { params: { header }, parseAs: 'stream', signal: controller.signal });
          const { data: body } = await ok(pending as Promise<Result<ReadableStream<Uint8Array>>>);
          failures = 0;
          onConnection?.(true);
          for await (const read of readSse(body)) {
            if (read.retryMs !== undefined) delay = read.retryMs;
            if (!read.message) continue;
            if (read.message.id !== undefined) last = read.message.id;
            const event = { type: read.message.event, id: read.message.id, data: JSON.parse(read.message.data) } as StreamEvent;
            yield event;
            if (event.type === 'stream.closed') return;
          }
          // The server ended the stream without saying why (a restart): reconnect.
          onConnection?.(false);
        } catch (err) {
          if (controller.signal.aborted) return;
          onConnection?.(false);
          if (err instanceof VideogenError && err.status < 500) throw err;
          if (!reconnect) throw err;
          failures += 1;
        }
        if (!reconnect) return;
        // Back off while connecting keeps failing; a stream that was up reconnects after the server's retry delay.
        await sleep(Math.min(MAX_RECONNECT_DELAY_MS, delay * 2 ** Math.max(0, failures - 1)), controller.signal).catch(() => undefined);
      }
    } finally {
      controller.abort();
    }
  }

  const batches = {
    /** Up to 500 submit bodies admitted whole, or refused whole with the reason (402/429), under one Idempotency-Key. */
    async create(body: CreateBatchRequest, { idempotencyKey = newIdempotencyKey(), signal }: SubmitOptions = {}): Promise<Batch> {
      return (await ok(http.POST('/v1/batches', { body, params: { header: { 'Idempotency-Key': idempotencyKey } }, signal }))).data as Batch;
    },
    async get(id: string, { signal }: RequestOptions = {}): Promise<Batch> {
      return (await ok(http.GET('/v1/batches/{id}', { params: { path: { id } }, signal }))).data;
    },
    async listPage(query: ListBatchesQuery = {}, { signal }: RequestOptions = {}): Promise<BatchList> {
      return (await ok(http.GET('/v1/batches', { params: { query }, signal }))).data;
    },
    /** Every batch, newest first, page after page. */
    async *list(query: Omit<ListBatchesQuery, 'cursor'> = {}, { signal }: RequestOptions = {}): AsyncGenerator<Batch, void, undefined> {
      let cursor: string | undefined;
      for (;;) {
        const page = await batches.listPage({ ...query, cursor }, { signal });
        yield* page.data;
        if (!page.has_more || !page.next_cursor) return;
        cursor = page.next_cursor;
      }
    },
    /** Every item of the batch, newest first. */
    items: (id: string, query: Omit<ListGenerationsQuery, 'cursor' | 'batch_id'> = {}, options: RequestOptions = {}) => list({ ...query, batch_id: id }, options),
    /** Cancels the items that have not ended. */
    async cancel(id: string, { signal }: RequestOptions = {}): Promise<Batch> {
      return (await ok(http.POST('/v1/batches/{id}/cancel', { params: { path: { id } }, signal }))).data as Batch;
    },
  };

  async function usage({ signal }: RequestOptions = {}): Promise<Usage> {
    return (await ok(http.GET('/v1/usage', { signal }))).data;
  }

  return {
    /** The typed openapi-fetch client underneath, for any operation of the document this client has no method for. */
    http,
    generations: { create, get, list, listPage, cancel, retry: retryGeneration, estimate, createAndWait },
    batches,
    events,
    usage,
    notifications: {
      async list(query: NotificationsQuery = {}, { signal }: RequestOptions = {}): Promise<NotificationList> {
        return (await ok(http.GET('/v1/notifications', { params: { query }, signal }))).data;
      },
      async markRead(id: string, { signal }: RequestOptions = {}): Promise<Notification> {
        return (await ok(http.POST('/v1/notifications/{id}/read', { params: { path: { id } }, signal }))).data;
      },
    },
    notificationSettings: {
      async get({ signal }: RequestOptions = {}): Promise<NotificationSettings> {
        return (await ok(http.GET('/v1/notification-settings', { signal }))).data;
      },
      async update(body: NotificationSettingsRequest, { signal }: RequestOptions = {}): Promise<NotificationSettings> {
        return (await ok(http.PUT('/v1/notification-settings', { body, signal }))).data;
      },
    },
    webhooks: {
      /** Checks a delivery's Standard Webhooks signature against the endpoint's secret; resolves to the event. */
      verify: (body: string | Uint8Array, headers: WebhookHeaders, secret: string, verifyOptions?: VerifyOptions): Promise<WebhookEvent> =>
        verifyWebhook(body, headers, secret, verifyOptions),
    },
  };
}
