import { z } from 'zod';
import type { ConfiguredBackend } from '../config';
import { verifyWebhook } from '../lib/webhook-signature';
import { sendHttp, type HttpSend } from './http-client';
import {
  attemptCallbackUrl,
  backendJob,
  callProvider,
  checkRenders,
  classifyFailure,
  clientKeyInUrl,
  clientKeyOf,
  firstUrl,
  headerOf,
  jobError,
} from './provider-http';
import type { BackendEventType, BackendJob, BackendSubmitRequest, GenerationBackend, IncomingCallback, VerifiedCallback } from './types';

/**
 * Replicate predictions (HTTP API, docs/backends.md): created with a webhook and an events filter (start, completed),
 * followed by the signed webhooks (Standard Webhooks) and by polling, canceled with POST …/cancel.
 */
export interface ProviderOptions {
  /** This backend's own callback path: <PUBLIC_URL>/internal/backend/callbacks/<name>. */
  callbackUrl: string;
  timeoutMs: number;
  /** How requests are sent (tests inject failures); undici over a keep-alive agent by default. */
  send?: HttpSend;
}

const predictionSchema = z.object({
  id: z.string().min(1),
  status: z.enum(['starting', 'processing', 'succeeded', 'failed', 'canceled', 'aborted']),
  output: z.unknown().optional(),
  error: z.unknown().optional(),
  logs: z.string().nullable().optional(),
  created_at: z.string().nullable().optional(),
  started_at: z.string().nullable().optional(),
  completed_at: z.string().nullable().optional(),
  /** The webhook URL it was created with: ours carries the attempt's client key. */
  webhook: z.string().nullable().optional(),
});
type Prediction = z.infer<typeof predictionSchema>;

const secretSchema = z.object({ key: z.string().min(1) });
const pageSchema = z.object({ next: z.string().nullable().optional(), results: z.array(z.unknown()) });

/** How many pages of the prediction list (100 each, newest first) a retried submit reads looking for its prediction. */
const FIND_PAGES = 5;

export class ReplicateBackend implements GenerationBackend {
  readonly cancelStopsWork = true;
  private readonly base: string;
  private readonly send: HttpSend;
  private signingSecret?: Promise<string>;

  constructor(
    private readonly spec: Extract<ConfiguredBackend, { kind: 'replicate' }>,
    private readonly options: ProviderOptions,
  ) {
    this.base = spec.base_url.replace(/\/+$/, '');
    this.send = options.send ?? sendHttp;
  }

  async submit(request: BackendSubmitRequest): Promise<BackendJob> {
    checkRenders(this.spec.name, this.spec.renders, request);
    const [model, version] = this.spec.model.split(':');
    const input = {
      prompt: request.prompt,
      duration: request.duration_seconds,
      resolution: request.resolution,
      aspect_ratio: request.aspect_ratio,
      ...(request.seed === null ? {} : { seed: request.seed }),
      // Replicate's image-to-video and video-to-video models name their start frame `image` and their source `video`.
      ...(request.input_reference === undefined ? {} : { image: request.input_reference }),
      ...(request.remix_of === undefined ? {} : { video: request.remix_of.video_url }),
    };
    const webhook = request.callback_url ? { webhook: attemptCallbackUrl(this.options.callbackUrl, request.client_key), webhook_events_filter: ['start', 'completed'] } : {};
    // An official model is created by name; a pinned version through /v1/predictions.
    const url = version ? `${this.base}/v1/predictions` : `${this.base}/v1/models/${model}/predictions`;
    const body = { ...(version ? { version } : {}), input, ...webhook };
    return this.read(await this.call('POST', url, body), request.client_key);
  }

  async getJob(backendJobId: string): Promise<BackendJob> {
    return this.read(await this.call('GET', `${this.base}/v1/predictions/${encodeURIComponent(backendJobId)}`));
  }

  async cancel(backendJobId: string): Promise<BackendJob> {
    return this.read(await this.call('POST', `${this.base}/v1/predictions/${encodeURIComponent(backendJobId)}/cancel`));
  }

  /**
   * The prediction an unanswered try of this submit created, if any: Replicate has no idempotency key, but it lists an
   * account's predictions (newest first, `created_after`) with the webhook URL each was created with, and ours names
   * the attempt's client key. A prediction created without a webhook (no callbacks wanted) cannot be told apart: none.
   */
  async findSubmitted(request: BackendSubmitRequest, since: Date): Promise<BackendJob | null> {
    if (!request.callback_url) return null;
    let url: string | null = `${this.base}/v1/predictions?${new URLSearchParams({ created_after: since.toISOString() })}`;
    for (let page = 0; url && page < FIND_PAGES; page += 1) {
      const { next, results } = pageSchema.parse(await this.call('GET', url));
      for (const item of results) {
        const prediction = predictionSchema.safeParse(item);
        if (prediction.success && clientKeyInUrl(prediction.data.webhook ?? '') === request.client_key) {
          return toJob(prediction.data, request.client_key);
        }
      }
      // Only Replicate's own next page: the cursor URL must stay on the configured API.
      url = next && next.startsWith(`${this.base}/`) ? next : null;
    }
    return null;
  }

  /** A cheap authenticated read: the token's account (GET /v1/account). */
  async health(): Promise<void> {
    await this.call('GET', `${this.base}/v1/account`);
  }

  async verifyCallback({ headers, rawBody, query }: IncomingCallback): Promise<VerifiedCallback> {
    verifyWebhook(await this.secret(), headers, rawBody);
    const prediction = predictionSchema.parse(JSON.parse(rawBody));
    const job = this.read(prediction);
    const type: BackendEventType = job.status === 'succeeded' ? 'job.succeeded' : job.status === 'failed' ? 'job.failed' : job.status === 'canceled' ? 'job.canceled' : 'job.started';
    return { eventId: headerOf(headers, 'webhook-id') ?? prediction.id, type, clientKey: clientKeyOf(query), job };
  }

  /** The account's signing secret: configured, or asked of Replicate once (it is the same for every webhook). */
  private secret(): Promise<string> {
    if (this.spec.webhookSecret) return Promise.resolve(this.spec.webhookSecret);
    this.signingSecret ??= this.call('GET', `${this.base}/v1/webhooks/default/secret`).then((json) => secretSchema.parse(json).key);
    // A failed ask is asked again by the next webhook (which Replicate retries), not remembered.
    this.signingSecret.catch(() => (this.signingSecret = undefined));
    return this.signingSecret;
  }

  private async call(method: string, url: string, body?: unknown): Promise<unknown> {
    const { json } = await callProvider({ method, url, body, headers: { authorization: `Bearer ${this.spec.credentials ?? ''}` }, timeoutMs: this.options.timeoutMs, send: this.send });
    return json;
  }

  private read(json: unknown, clientKey?: string): BackendJob {
    const parsed = predictionSchema.safeParse(json);
    if (!parsed.success) return backendJob({ id: '', status: 'failed', error: jobError('internal_error', 'Replicate answered a malformed prediction') });
    return toJob(parsed.data, clientKey);
  }
}

function toJob(p: Prediction, clientKey?: string): BackendJob {
  const times = { createdAt: p.created_at, startedAt: p.started_at, completedAt: p.completed_at, clientKey };
  switch (p.status) {
    case 'starting':
      return backendJob({ id: p.id, status: 'queued', ...times });
    case 'processing':
      return backendJob({ id: p.id, status: 'running', progress: logProgress(p.logs), ...times });
    case 'succeeded': {
      const videoUrl = firstUrl(p.output);
      if (!videoUrl) return backendJob({ id: p.id, status: 'failed', error: jobError('internal_error', 'the prediction succeeded without a video URL'), ...times });
      return backendJob({ id: p.id, status: 'succeeded', videoUrl, ...times });
    }
    case 'failed':
      return backendJob({ id: p.id, status: 'failed', error: classifyFailure(typeof p.error === 'string' ? p.error : JSON.stringify(p.error ?? 'the prediction failed')), ...times });
    case 'aborted':
      // Ended by Replicate before it ran (not by us: our cancels end `canceled`): worth another attempt.
      return backendJob({ id: p.id, status: 'failed', error: jobError('gpu_unavailable', 'Replicate aborted the prediction before it ran'), ...times });
    case 'canceled':
      return backendJob({ id: p.id, status: 'canceled', ...times });
  }
}

/** Video models print a progress bar to their logs: the last `NN%` on it is the best progress there is. */
function logProgress(logs: string | null | undefined): number {
  const matches = logs?.match(/(\d{1,3})%/g);
  const last = matches?.at(-1);
  return last ? Math.min(99, Number(last.slice(0, -1))) / 100 : 0;
}
