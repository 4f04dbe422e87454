import { z } from 'zod';
import type { ConfiguredBackend } from '../config';
import { sendHttp, type HttpSend } from './http-client';
import { backendJob, callProvider, checkRenders, classifyFailure, jobError } from './provider-http';
import type { ProviderOptions } from './replicate';
import { BackendRejectedError, BackendUnavailableError, type BackendJob, type BackendJobError, type BackendSubmitRequest, type GenerationBackend } from './types';

/**
 * Google Veo through the Gemini API: `models/{model}:predictLongRunning` starts a long-running operation, which is
 * polled (`GET /v1beta/{operation name}`) until `done`. There is no webhook and no cancel: a canceled job of ours is
 * answered `canceled` at once and no longer followed, while Veo renders it to its end.
 */
const operationSchema = z.object({
  name: z.string().min(1),
  done: z.boolean().optional(),
  metadata: z.object({ progressPercent: z.number().optional() }).passthrough().optional(),
  error: z.object({ code: z.number().optional(), message: z.string().optional(), status: z.string().optional() }).optional(),
  response: z
    .object({
      generateVideoResponse: z
        .object({
          generatedSamples: z.array(z.object({ video: z.object({ uri: z.string().optional() }).passthrough().optional() })).optional(),
          raiMediaFilteredCount: z.number().optional(),
          raiMediaFilteredReasons: z.array(z.string()).optional(),
        })
        .passthrough()
        .optional(),
    })
    .passthrough()
    .optional(),
});
type Operation = z.infer<typeof operationSchema>;

/** An operation's name as Veo gives it (`models/<model>/operations/<id>`): nothing that could leave the API's path. */
const OPERATION_NAME = /^[\w-]+(\/[\w.-]+)*$/;

export class VeoBackend implements GenerationBackend {
  readonly cancelStopsWork = false;
  private readonly base: string;
  private readonly send: HttpSend;

  constructor(
    private readonly spec: Extract<ConfiguredBackend, { kind: 'veo' }>,
    private readonly options: ProviderOptions,
  ) {
    this.base = spec.base_url.replace(/\/+$/, '');
    this.send = options.send ?? sendHttp;
  }

  async submit(request: BackendSubmitRequest): Promise<BackendJob> {
    checkRenders(this.spec.name, this.spec.renders, request);
    // Veo takes a start image as bytes (or a Cloud Storage URI), not as a URL: this adapter sends none rather than drop one.
    if (request.input_reference !== undefined || request.remix_of !== undefined) {
      throw new BackendRejectedError(`backend ${this.spec.name} cannot render ${request.input_reference !== undefined ? 'an image input' : 'a remix (a video input)'} (the Veo adapter sends no images or videos)`, 422, 'invalid_input');
    }
    const body = {
      instances: [{ prompt: request.prompt }],
      parameters: {
        aspectRatio: request.aspect_ratio,
        resolution: request.resolution,
        durationSeconds: request.duration_seconds,
        ...(request.seed === null ? {} : { seed: request.seed }),
      },
    };
    return this.read(await this.call('POST', `${this.base}/v1beta/models/${this.spec.model}:predictLongRunning`, body), request.client_key);
  }

  async getJob(backendJobId: string): Promise<BackendJob> {
    if (!OPERATION_NAME.test(backendJobId)) throw new BackendRejectedError(`not a Veo operation name: ${backendJobId}`, 404);
    return this.read(await this.call('GET', `${this.base}/v1beta/${backendJobId}`));
  }

  /** Veo has no cancel: the operation runs on; our job ends here and its polling stops. */
  cancel(backendJobId: string): Promise<BackendJob> {
    return Promise.resolve(backendJob({ id: backendJobId, status: 'canceled' }));
  }

  /** The configured model's metadata (GET /v1beta/models/{model}): the API answers, takes our key, and has the model. */
  async health(): Promise<void> {
    await this.call('GET', `${this.base}/v1beta/models/${this.spec.model}`);
  }

  private async call(method: string, url: string, body?: unknown): Promise<unknown> {
    try {
      const { json } = await callProvider({ method, url, body, headers: { 'x-goog-api-key': this.spec.credentials ?? '' }, timeoutMs: this.options.timeoutMs, send: this.send });
      return json;
    } catch (err) {
      // The Gemini API answers a refused key 400 INVALID_ARGUMENT: the operator's to fix, not the user's input.
      if (err instanceof BackendRejectedError && /API key not valid|API_KEY_INVALID|PERMISSION_DENIED|UNAUTHENTICATED/i.test(err.message)) {
        throw new BackendUnavailableError(err.message, err.status);
      }
      throw err;
    }
  }

  private read(json: unknown, clientKey?: string): BackendJob {
    const parsed = operationSchema.safeParse(json);
    if (!parsed.success) return backendJob({ id: '', status: 'failed', error: jobError('internal_error', 'Veo answered a malformed operation') });
    return toJob(parsed.data, clientKey);
  }
}

function toJob(op: Operation, clientKey?: string): BackendJob {
  if (!op.done) return backendJob({ id: op.name, clientKey, status: 'running', progress: (op.metadata?.progressPercent ?? 0) / 100 });
  if (op.error) return backendJob({ id: op.name, clientKey, status: 'failed', error: rpcError(op.error) });
  const result = op.response?.generateVideoResponse;
  const uri = result?.generatedSamples?.find((s) => s.video?.uri)?.video?.uri;
  if (uri) return backendJob({ id: op.name, clientKey, status: 'succeeded', videoUrl: uri });
  if ((result?.raiMediaFilteredCount ?? 0) > 0) {
    const reasons = result?.raiMediaFilteredReasons?.join('; ') || 'the video was filtered by Veo\u2019s safety filters';
    return backendJob({ id: op.name, clientKey, status: 'failed', error: jobError('content_policy_violation', reasons) });
  }
  return backendJob({ id: op.name, clientKey, status: 'failed', error: jobError('internal_error', 'the operation ended without a video') });
}

/** A google.rpc.Status, by its canonical code (https://google.aip.dev/193), into ours. */
function rpcError({ code, message = 'the operation failed', status }: NonNullable<Operation['error']>): BackendJobError {
  switch (code) {
    case 3: // INVALID_ARGUMENT
    case 9: // FAILED_PRECONDITION
    case 11: // OUT_OF_RANGE
      return classifyFailure(message).code === 'content_policy_violation' ? jobError('content_policy_violation', message) : jobError('invalid_input', message);
    case 8: // RESOURCE_EXHAUSTED
      return jobError('gpu_unavailable', message);
    default: {
      const read = classifyFailure(`${status ?? ''} ${message}`);
      // An unexplained failure is Veo's, worth another attempt; never the user's input without a code saying so.
      return read.code === 'invalid_input' ? jobError('internal_error', message) : { ...read, message };
    }
  }
}
