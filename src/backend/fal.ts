import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import { z } from 'zod';
import type { ConfiguredBackend } from '../config';
import { WebhookVerificationError } from '../lib/webhook-signature';
import { sendHttp, type HttpSend } from './http-client';
import { attemptCallbackUrl, backendJob, callProvider, checkRenders, classifyFailure, clientKeyOf, firstUrl, headerOf, jobError } from './provider-http';
import type { ProviderOptions } from './replicate';
import { BackendRejectedError, type BackendJob, type BackendJobError, type BackendSubmitRequest, type GenerationBackend, type IncomingCallback, type VerifiedCallback } from './types';

/**
 * fal's queue (queue.fal.run): submit with `fal_webhook`, then status, result and cancel under
 * /{app}/requests/{request_id}. Webhooks are signed with ED25519 keys fal publishes as a JWKS.
 */
const submittedSchema = z.object({ request_id: z.string().min(1) });
const statusSchema = z.object({
  status: z.enum(['IN_QUEUE', 'IN_PROGRESS', 'COMPLETED']),
  queue_position: z.number().optional(),
  error: z.string().nullable().optional(),
  error_type: z.string().nullable().optional(),
});
const webhookSchema = z.object({
  request_id: z.string().min(1),
  status: z.enum(['OK', 'ERROR']),
  payload: z.unknown().optional(),
  error: z.string().nullable().optional(),
  payload_error: z.string().nullable().optional(),
});
const jwksSchema = z.object({ keys: z.array(z.object({ kty: z.string(), crv: z.string().optional(), x: z.string().optional() }).passthrough()) });

const TOLERANCE_SECONDS = 5 * 60;
const JWKS_MAX_AGE_MS = 24 * 60 * 60_000;
/** An unknown signature fetches the key set again (fal rotated its keys), at most this often. */
const JWKS_REFRESH_MIN_MS = 60_000;

export class FalBackend implements GenerationBackend {
  readonly cancelStopsWork = true;
  private readonly base: string;
  /** Status, result and cancel live under the app (owner/name), without the endpoint's sub-path. */
  private readonly app: string;
  private readonly send: HttpSend;
  private keys?: { fetchedAt: number; keys: Promise<KeyObject[]> };

  constructor(
    private readonly spec: Extract<ConfiguredBackend, { kind: 'fal' }>,
    private readonly options: ProviderOptions,
  ) {
    this.base = spec.base_url.replace(/\/+$/, '');
    this.app = spec.model.split('/').slice(0, 2).join('/');
    this.send = options.send ?? sendHttp;
  }

  async submit(request: BackendSubmitRequest): Promise<BackendJob> {
    checkRenders(this.spec.name, this.spec.renders, request);
    const url = new URL(`${this.base}/${this.spec.model}`);
    if (request.callback_url) url.searchParams.set('fal_webhook', attemptCallbackUrl(this.options.callbackUrl, request.client_key));
    const body = {
      prompt: request.prompt,
      duration: request.duration_seconds,
      resolution: request.resolution,
      aspect_ratio: request.aspect_ratio,
      ...(request.seed === null ? {} : { seed: request.seed }),
      // fal's image-to-video and video-to-video endpoints take `image_url` and `video_url`.
      ...(request.input_reference === undefined ? {} : { image_url: request.input_reference }),
      ...(request.remix_of === undefined ? {} : { video_url: request.remix_of.video_url }),
    };
    const submitted = submittedSchema.parse(await this.call('POST', url.toString(), body));
    return backendJob({ id: submitted.request_id, clientKey: request.client_key, status: 'queued' });
  }

  async getJob(backendJobId: string): Promise<BackendJob> {
    const status = statusSchema.parse(await this.call('GET', `${this.requestUrl(backendJobId)}/status`));
    if (status.status === 'IN_QUEUE') return backendJob({ id: backendJobId, status: 'queued' });
    if (status.status === 'IN_PROGRESS') return backendJob({ id: backendJobId, status: 'running' });
    if (status.error && /cancel/i.test(`${status.error_type ?? ''} ${status.error}`)) return backendJob({ id: backendJobId, status: 'canceled' });
    if (status.error) return backendJob({ id: backendJobId, status: 'failed', error: falError(status.error, status.error_type) });
    return this.result(backendJobId);
  }

  /** fal cancels a request still queued or running (202); one already completed (400) is answered as it ended. */
  async cancel(backendJobId: string): Promise<BackendJob> {
    try {
      await this.call('PUT', `${this.requestUrl(backendJobId)}/cancel`);
      return backendJob({ id: backendJobId, status: 'canceled' });
    } catch (err) {
      if (err instanceof BackendRejectedError && err.status === 400) return this.getJob(backendJobId);
      throw err;
    }
  }

  async verifyCallback({ headers, rawBody, query }: IncomingCallback): Promise<VerifiedCallback> {
    const requestId = headerOf(headers, 'x-fal-webhook-request-id');
    const userId = headerOf(headers, 'x-fal-webhook-user-id');
    const timestamp = headerOf(headers, 'x-fal-webhook-timestamp');
    const signature = headerOf(headers, 'x-fal-webhook-signature');
    if (!requestId || !userId || !timestamp || !signature) throw new WebhookVerificationError('missing fal signature headers');
    const seconds = Number(timestamp);
    if (!Number.isInteger(seconds) || Math.abs(Date.now() / 1000 - seconds) > TOLERANCE_SECONDS) throw new WebhookVerificationError('timestamp outside tolerance');
    const message = Buffer.from([requestId, userId, timestamp, createHash('sha256').update(rawBody).digest('hex')].join('\n'));
    const signed = /^[0-9a-f]+$/i.test(signature) ? Buffer.from(signature, 'hex') : Buffer.alloc(0);
    const matches = (keys: KeyObject[]) => keys.some((key) => signed.length === 64 && verify(null, message, key, signed));
    if (!matches(await this.publicKeys()) && !matches(await this.publicKeys(true))) throw new WebhookVerificationError('no matching signature');

    const hook = webhookSchema.parse(JSON.parse(rawBody));
    if (hook.request_id !== requestId) throw new WebhookVerificationError('the body names another request than the signed headers');
    const clientKey = clientKeyOf(query);
    if (hook.status === 'ERROR') {
      return { eventId: `${requestId}:${timestamp}`, type: 'job.failed', clientKey, job: { id: requestId, video_url: null, error: falError(hook.error ?? 'the request failed', null, hook.payload) } };
    }
    const videoUrl = firstUrl(hook.payload);
    const error = videoUrl ? null : jobError('internal_error', hook.payload_error ?? 'the result carried no video URL');
    return { eventId: `${requestId}:${timestamp}`, type: videoUrl ? 'job.succeeded' : 'job.failed', clientKey, job: { id: requestId, video_url: videoUrl, error } };
  }

  private async result(backendJobId: string): Promise<BackendJob> {
    try {
      const output = await this.call('GET', this.requestUrl(backendJobId));
      const videoUrl = firstUrl(output);
      if (!videoUrl) return backendJob({ id: backendJobId, status: 'failed', error: jobError('internal_error', 'the result carried no video URL') });
      return backendJob({ id: backendJobId, status: 'succeeded', videoUrl });
    } catch (err) {
      // The result of a request the model refused (422 and such) is that refusal; a 404 is a request fal no longer knows.
      if (err instanceof BackendRejectedError && err.status !== 404) return backendJob({ id: backendJobId, status: 'failed', error: falError(err.message, null) });
      throw err;
    }
  }

  /** fal's keys, fetched at most once a day unless `again` (a signature none of them verified) and a minute has passed. */
  private publicKeys(again = false): Promise<KeyObject[]> {
    const now = Date.now();
    const stale = !this.keys || now - this.keys.fetchedAt > JWKS_MAX_AGE_MS || (again && now - this.keys.fetchedAt > JWKS_REFRESH_MIN_MS);
    if (stale) {
      const keys = this.call('GET', this.spec.jwks_url, undefined, false).then((json) =>
        jwksSchema
          .parse(json)
          .keys.filter((k) => k.kty === 'OKP' && k.crv === 'Ed25519' && k.x)
          .map((k) => createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: k.x! }, format: 'jwk' })),
      );
      this.keys = { fetchedAt: now, keys };
      keys.catch(() => (this.keys = undefined));
    }
    return this.keys!.keys;
  }

  private requestUrl(backendJobId: string): string {
    return `${this.base}/${this.app}/requests/${encodeURIComponent(backendJobId)}`;
  }

  private async call(method: string, url: string, body?: unknown, authorized = true): Promise<unknown> {
    const headers: Record<string, string> = authorized ? { authorization: `Key ${this.spec.credentials ?? ''}` } : {};
    const { json } = await callProvider({ method, url, body, headers, timeoutMs: this.options.timeoutMs, send: this.send });
    return json;
  }
}

/** fal's failures: a 4xx from the model (`Invalid status code: 422`, a validation `detail`) is the input's; the rest by their words. */
function falError(message: string, errorType: string | null | undefined, payload?: unknown): BackendJobError {
  const detail = payload && typeof payload === 'object' && 'detail' in payload ? ` ${JSON.stringify((payload as { detail: unknown }).detail)}` : '';
  const text = `${message}${detail}`;
  const status = /status code:?\s*(\d{3})/i.exec(message)?.[1] ?? /backend answered (\d{3})/.exec(message)?.[1];
  // fal's own wrapper words ("Invalid status code: 500") say nothing of the input: only the status in them counts.
  const read = classifyFailure(`${errorType ?? ''} ${text.replace(/invalid status code:?\s*\d{3}/gi, '')}`);
  if (read.code === 'content_policy_violation') return { ...read, message: text };
  if (status && status.startsWith('4') && status !== '429' && status !== '408') return jobError('invalid_input', text);
  return { ...read, message: text };
}
