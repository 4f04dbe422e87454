import { z } from 'zod';
import { PRIORITIES } from '../domain/generation';
import { GENERATION_ERROR_CODES } from '../domain/generation-errors';
import { GENERATION_STATUSES } from '../domain/generation-state';
import { createGenerationBody } from './requests';

/**
 * The wire's resources as zod schemas — what the API answers, webhooks carry and event streams send: the OpenAPI
 * document's components (src/api/openapi.ts) and the types the serializers are checked against (serialize.ts,
 * test/openapi.test.ts), so the document cannot drift from the wire.
 */
export const responseComponents: Record<string, z.ZodType> = {};

const component = <S extends z.ZodType>(id: string, schema: S): S => {
  responseComponents[id] = schema;
  return schema;
};

const timestamp = z.iso.datetime().meta({ description: 'ISO 8601 time, UTC', examples: ['2025-01-01T12:00:00.000Z'] });


export const errorResponse = component(
  'Error',
  z.object({
    error: z.object({
      code: z.string().meta({ description: 'machine-readable, snake_case', examples: ['invalid_request', 'not_found', 'rate_limited'] }),
      message: z.string().meta({ description: 'for humans; names the offending field when there is one' }),
      details: z.unknown().optional().meta({ description: 'more about the error, e.g. the validation issues or retry_after_seconds' }),
    }),
  }),
);

export const generationError = component(
  'GenerationError',
  z
    .object({
      code: z.enum(GENERATION_ERROR_CODES),
      message: z.string(),
      retryable: z.boolean().meta({ description: 'whether submitting the same request again could succeed' }),
    })
    .meta({ description: 'Why a generation failed or was canceled.' }),
);

export const generationResource = component(
  'Generation',
  z
    .object({
      id: z.string().meta({ examples: ['gen_3f2a...'] }),
      object: z.literal('generation'),
      status: z.enum(GENERATION_STATUSES).meta({ description: 'queued → running → succeeded | failed | canceled | expired; terminal states are final. expired: no GPU slot within the queue limit (code queue_timeout), never charged' }),
      prompt: z.string(),
      duration_seconds: createGenerationBody.shape.duration_seconds.unwrap().optional(),
      resolution: createGenerationBody.shape.resolution.unwrap().optional(),
      aspect_ratio: createGenerationBody.shape.aspect_ratio.unwrap().optional(),
      seed: z.int().nullable(),
      webhook_url: z.string().nullable(),
      metadata: z.record(z.string(), z.string()),
      priority: z.enum(PRIORITIES).meta({ description: 'the lane: `interactive` goes first, `batch` waits while interactive jobs wait (queue_position counts only what is ahead in the job\'s lane and above it)' }),
      input_reference: z.string().nullable().meta({ description: 'the image the video starts from (image-to-video), as submitted; null for text-to-video' }),
      remix_of: z.string().nullable().meta({ description: 'the succeeded generation of yours this one remixes; null otherwise' }),
      attempt: z.int().min(0).meta({ description: 'the current attempt; transient backend failures start a new one' }),
      progress: z.number().min(0).max(1),
      backend_job_id: z.string().nullable(),
      backend: z.string().nullable().meta({ description: 'the backend (a name of BACKENDS) that ran the latest attempt to reach one; null before any did. A job is charged at that backend\'s cost factor' }),
      failed_over_from: z.string().nullable().meta({ description: 'the backend this job left because it was down or its pool was paused (an attempt ran there, or routing passed it over); null otherwise' }),
      video_url: z.string().nullable().meta({ description: 'set once succeeded' }),
      error: generationError.nullable().meta({ description: 'set once failed or canceled' }),
      queue_position: z.int().min(1).nullable().meta({ description: 'while queued: 1 is next to get a GPU' }),
      eta_seconds: z.number().nullable().meta({ description: 'while queued: estimated seconds until a GPU, when known' }),
      created_at: timestamp,
      started_at: timestamp.nullable(),
      completed_at: timestamp.nullable(),
      updated_at: timestamp,
      retry_of: z.string().nullable().meta({ description: 'the generation this one reruns (POST /v1/generations/{id}/retry); null for a submit' }),
      batch_id: z.string().nullable().meta({ description: 'the batch this generation is an item of (POST /v1/batches); null otherwise' }),
    })
    .meta({ description: 'One text-to-video job, as projected from its workflow.' }),
);
export type GenerationResource = z.infer<typeof generationResource>;

export const generationEstimate = component(
  'GenerationEstimate',
  z
    .object({
      credits: z.int().min(0).meta({ description: 'what the generation would cost' }),
      admitted: z.boolean().meta({ description: 'whether a submit of it would be admitted now' }),
      refusal: z
        .object({ code: z.string(), message: z.string() })
        .nullable()
        .meta({ description: "when not admitted: the code and message a submit's error would carry now (insufficient_credits, rate_limited, too_many_active_jobs, too_many_active_batch_jobs, daily_quota_exceeded, capacity_exhausted)" }),
      queue_position: z.int().min(1).nullable().meta({ description: 'when admitted: the queue position it would start at (1 is next to get a GPU)' }),
      eta_seconds: z.number().nullable().meta({ description: 'when admitted: estimated seconds until a GPU, when known' }),
    })
    .meta({ description: 'What a submit of this request would get now. Nothing is reserved, counted or written.' }),
);
export type GenerationEstimate = z.infer<typeof generationEstimate>;

const page = <S extends z.ZodType>(item: S) =>
  z.object({
    data: z.array(item),
    has_more: z.boolean(),
    next_cursor: z.string().nullable().meta({ description: 'pass as `cursor` for the next page; null on the last' }),
  });

export const generationList = component('GenerationList', page(generationResource));

export const notificationResource = component(
  'Notification',
  z.object({
    id: z.string(),
    object: z.literal('notification'),
    event: z.string().meta({ examples: ['generation.succeeded', 'generation.failed', 'generation.canceled', 'generation.expired', 'batch.completed'] }),
    generation_id: z.string().nullable().meta({ description: 'the generation that ended; null for a batch event' }),
    batch_id: z.string().nullable().meta({ description: 'the batch of a batch event (batch.completed); null otherwise' }),
    title: z.string(),
    message: z.string(),
    data: z.record(z.string(), z.unknown()).meta({ description: 'generation_id, status, video_url and error when the generation ended; the batch (as GET /v1/batches/{id} reads) when a batch completed' }),
    read: z.boolean(),
    read_at: timestamp.nullable(),
    created_at: timestamp,
  }),
);
export const notificationList = component('NotificationList', page(notificationResource));

const emailOnStatuses = z.array(z.enum(['succeeded', 'failed', 'expired', 'canceled']));

export const notificationSettingsResource = component(
  'NotificationSettings',
  z.object({
    object: z.literal('notification_settings'),
    email: z.string().nullable().meta({ description: 'where endings are mailed; null: no mail' }),
    email_verified: z.boolean().meta({ description: 'read-only: the link mailed to the address was opened. Nothing is mailed before' }),
    on: emailOnStatuses.meta({ description: 'which endings are mailed' }),
    digest_seconds: z.number().int().meta({ description: 'endings within this many seconds of the first go in one mail; 0: each on its own' }),
  }),
);

export const emailLinkResult = component(
  'EmailLinkResult',
  z.object({
    object: z.enum(['email_verification', 'email_unsubscribe']),
    email: z.string().nullable(),
    email_verified: z.boolean().optional(),
    on: emailOnStatuses.optional(),
  }),
);

export const webhookEndpointResource = component(
  'WebhookEndpoint',
  z.object({
    id: z.string(),
    object: z.literal('webhook_endpoint'),
    url: z.string(),
    description: z.string(),
    events: z.array(z.string()).meta({ description: 'event types delivered; empty means all' }),
    status: z.enum(['enabled', 'disabled']),
    disabled_reason: z.string().nullable(),
    secret: z.string().optional().meta({ description: 'the whsec_ signing secret: only in the answers to create and rotate-secret' }),
    previous_secret_expires_at: timestamp.nullable().meta({ description: 'after a rotation, the old secret also signs until then' }),
    created_at: timestamp,
    updated_at: timestamp,
  }),
);
export const webhookEndpointList = component('WebhookEndpointList', z.object({ data: z.array(webhookEndpointResource) }));
export const deletedWebhookEndpoint = component(
  'DeletedWebhookEndpoint',
  z.object({ id: z.string(), object: z.literal('webhook_endpoint'), deleted: z.literal(true) }),
);
export const webhookSecret = component('WebhookSecret', z.object({ object: z.literal('webhook_secret'), secret: z.string() }));

export const webhookDeliveryResource = component(
  'WebhookDelivery',
  z.object({
    id: z.string(),
    object: z.literal('webhook_delivery'),
    endpoint_id: z.string().nullable(),
    webhook_id: z.string().meta({ description: 'the Standard Webhooks message id, the same on every attempt and replay' }),
    event_type: z.string(),
    generation_id: z.string().nullable().meta({ description: 'the generation the event is about; null for a batch event' }),
    batch_id: z.string().nullable().meta({ description: 'the batch a batch event (batch.completed) is about; null otherwise' }),
    url: z.string(),
    status: z.enum(['pending', 'succeeded', 'failed']),
    attempt_count: z.int(),
    last_response_status: z.int().nullable(),
    last_error: z.string().nullable(),
    next_attempt_at: timestamp.nullable(),
    created_at: timestamp,
    updated_at: timestamp,
    attempts: z.array(
      z.object({
        attempt: z.int(),
        url: z.string(),
        response_status: z.int().nullable(),
        response_body: z.string().nullable(),
        error: z.string().nullable(),
        duration_ms: z.int(),
        attempted_at: timestamp,
      }),
    ),
  }),
);
export const webhookDeliveryList = component('WebhookDeliveryList', page(webhookDeliveryResource));

export const usage = component(
  'Usage',
  z.object({
    tier: z.string(),
    credits: z.object({ available: z.number(), reserved: z.number().meta({ description: 'held by unfinished jobs' }), used: z.number() }),
    limits: z.object({
      requests_burst: z.number(),
      requests_per_second: z.number(),
      max_active_jobs: z.number().meta({ description: 'interactive jobs queued or running' }),
      max_active_batch_jobs: z.number().meta({ description: 'batch jobs queued or running (a limit of their own)' }),
      daily_quota: z.number().meta({ description: 'jobs created a day, both lanes' }),
      tier_backlog_bound: z.number(),
      tier_batch_backlog_bound: z.number(),
    }),
    active_jobs: z.number().meta({ description: 'queued or running, both lanes' }),
    active_batch_jobs: z.number(),
    used_today: z.number(),
    remaining: z.object({
      requests: z.number(),
      active_jobs: z.number().meta({ description: 'interactive' }),
      active_batch_jobs: z.number(),
      daily_quota: z.number(),
      tier_backlog: z.number(),
      tier_batch_backlog: z.number(),
    }),
    daily_quota_resets_in_seconds: z.number(),
    gpu_capacity: z.number(),
    backends: z
      .array(
        z.object({
          backend: z.string(),
          jobs: z.number().meta({ description: 'my jobs whose latest attempt ran there (jobs kept by retention)' }),
          succeeded: z.number(),
          credits_used: z.number().meta({ description: 'what those jobs were charged (the backend\'s cost factor applied)' }),
        }),
      )
      .meta({ description: 'my jobs and credits by the backend that ran them' }),
  }),
);

export const health = component('Health', z.object({ status: z.literal('ok') }));
export const readiness = component(
  'Readiness',
  z.object({
    status: z.enum(['ready', 'degraded', 'not_ready']).meta({
      description: '`ready` (200); `degraded` (200): Temporal does not answer, and submits are kept and started once it does; `not_ready` (503): Postgres does not answer',
    }),
    checks: z
      .object({ postgres: z.string(), temporal: z.string() })
      .optional()
      .meta({ description: '`ok`, or why the dependency is unavailable; with ADMIN_PORT set, only on the admin listener' }),
  }),
);

export const createdUser = component(
  'CreatedUser',
  z.object({
    user: z.object({ id: z.string(), name: z.string(), tier: z.string(), created_at: timestamp }),
    api_key: z.string().meta({ description: 'shown once; only its hash is stored' }),
  }),
);

export const apiKeyResource = component(
  'ApiKey',
  z
    .object({
      id: z.string().meta({ examples: ['key_9c1e...'] }),
      object: z.literal('api_key'),
      user_id: z.string(),
      prefix: z.string().meta({ description: 'the first characters of the key, to tell keys apart', examples: ['vg_Ab3xQ'] }),
      status: z.enum(['active', 'expiring', 'revoked']).meta({ description: 'expiring: rotated with a grace period that has not ended yet' }),
      created_at: timestamp,
      revoked_at: timestamp.nullable().meta({ description: 'when the key stops (or stopped) working' }),
    })
    .meta({ description: 'An API key, never the key itself (only its hash is stored).' }),
);
export const apiKeyList = component('ApiKeyList', z.object({ data: z.array(apiKeyResource).meta({ description: 'newest first' }) }));
export const apiKeyRotation = component(
  'ApiKeyRotation',
  z.object({
    object: z.literal('api_key_rotation'),
    api_key: z.string().meta({ description: 'the new key: shown once, never again' }),
    key: apiKeyResource,
    previous_key: apiKeyResource.meta({ description: 'the key this call was made with; revoked_at says when it stops working' }),
  }),
);
export const issuedApiKey = component(
  'IssuedApiKey',
  z.object({ object: z.literal('issued_api_key'), api_key: z.string().meta({ description: 'shown once, never again' }), key: apiKeyResource }),
);

export const stuckGenerations = component(
  'StuckGenerationList',
  z.object({
    data: z.array(
      z.object({
        id: z.string(),
        user_id: z.string(),
        tier: z.string(),
        attempt: z.int(),
        backend_job_id: z.string().nullable(),
        dispatcher: z.string().nullable(),
        started_at: timestamp.nullable(),
        expected_done_at: timestamp.nullable(),
        overdue_seconds: z.int().nullable(),
        trace_id: z
          .string()
          .nullable()
          .meta({ description: "the job's OpenTelemetry trace (W3C trace id, 32 hex digits); null when tracing is off or its start carried none" }),
      }),
    ),
  }),
);

export const gpuCapacity = component(
  'GpuCapacity',
  z.object({
    pool: z.string(),
    capacity: z.int().meta({ description: 'live: the smaller of the operator setting and what the backend reports' }),
    admin_capacity: z.int().nullable(),
    backend_capacity: z.int().nullable(),
    default_capacity: z.int(),
    leased_slots: z.int(),
    running_jobs: z.int(),
    updated_at: timestamp.nullable(),
  }),
);

export const generationEventData = component(
  'GenerationEventData',
  z
    .object({
      event_id: z.int().meta({ description: 'also the SSE id: resume with Last-Event-ID' }),
      type: z.string().meta({ examples: ['generation.queued', 'generation.running', 'generation.updated', 'generation.succeeded'] }),
      generation_id: z.string(),
      status: z.enum(GENERATION_STATUSES),
      progress: z.number(),
      attempt: z.int(),
      queue_position: z.int().nullable(),
      video_url: z.string().nullable(),
      error: generationError.nullable(),
      updated_at: z.string(),
      created_at: timestamp,
    })
    .meta({ description: 'The data of `generation.<status>` (status changed) and `generation.updated` (progress, attempt) events.' }),
);

export const queuePositionEventData = component(
  'QueuePositionEventData',
  z
    .object({
      type: z.literal('generation.queue_position'),
      generation_id: z.string(),
      queue_position: z.int().nullable(),
      eta_seconds: z.number().nullable(),
    })
    .meta({ description: 'The data of `generation.queue_position` events, sent while a job is queued; they carry no id.' }),
);

export const resyncEventData = component(
  'ResyncEventData',
  z
    .object({
      type: z.literal('stream.resync_required'),
      reason: z.enum(['resume_window_exceeded', 'unknown_event_id']),
      last_event_id: z.int().meta({ description: 'the Last-Event-ID the client sent' }),
      message: z.string(),
    })
    .meta({
      description:
        'The data of a `stream.resync_required` event: the Last-Event-ID was not replayed (more events after it than the resume window holds, ' +
        'the first of them older than it, or no such event). List your generations again; the stream goes on live, and this event\'s id is where a reconnect resumes.',
    }),
);

export const streamClosedEventData = component(
  'StreamClosedEventData',
  z
    .object({ type: z.literal('stream.closed'), reason: z.enum(['api_key_revoked']), message: z.string() })
    .meta({ description: 'The data of a `stream.closed` event, the last of a stream the server ends: its API key was revoked. Do not reconnect with that key.' }),
);

export const webhookEvent = component(
  'WebhookEvent',
  z.object({
    type: z.enum(['generation.succeeded', 'generation.failed', 'generation.canceled', 'generation.expired']),
    timestamp,
    data: generationResource,
  }),
);
