import { z } from 'zod';
import * as res from '../wire/resources';
import { capacityBody, capacityQuery } from './capacity-routes';
import { createGenerationBody, createUserBody, listGenerationsQuery } from '../wire/requests';
import { batchList, batchResource, createBatchBody, listBatchesQuery, MAX_BATCH_ITEMS } from '../wire/batches';
import { listNotificationsQuery } from './notifications-routes';
import { emailLinkQuery, notificationSettingsBody } from './notification-settings-routes';
import { createEndpointBody, deliveriesQuery, rotateSecretBody } from './webhook-endpoints-routes';
import { rotateApiKeyBody } from './api-keys-routes';
import { MAX_LIVE_KEYS } from './api-keys';
import { AUTH_CACHE_MS } from './auth';

/**
 * Every operation the app serves, as the OpenAPI document states it. Request schemas are the ones the routes validate
 * with; test/openapi.test.ts fails when this list and the routes Express really has differ.
 */
export type HttpMethod = 'get' | 'post' | 'put' | 'delete';
export type ErrorStatus = 400 | 401 | 402 | 404 | 409 | 422 | 429 | 503;
export type ResponseHeader = 'Location' | 'Idempotent-Replayed' | 'RateLimit' | 'RateLimit-Policy' | 'Preference-Applied' | 'Backend-Cancel';

export interface SuccessResponse {
  /** 503 only where the route answers it with its own body (GET /readyz), not the error shape. */
  status: 200 | 201 | 202 | 503;
  description: string;
  /** A JSON body; absent for an event stream or a text body. */
  schema?: z.ZodType;
  /** The media type of a body that is not JSON. */
  text?: string;
  /** A Server-Sent Events stream: the event names and the schema of their data. */
  events?: Array<{ names: string[]; data: z.ZodType }>;
  headers?: ResponseHeader[];
}

export interface Operation {
  method: HttpMethod;
  /** As Express mounts it: `/v1/generations/:id`. */
  path: string;
  operationId: string;
  tag: 'generations' | 'batches' | 'events' | 'notifications' | 'webhooks' | 'usage' | 'api-keys' | 'admin' | 'meta';
  summary: string;
  description?: string;
  auth: 'user' | 'admin' | 'none';
  /** A description of each `:param`. */
  pathParams?: Record<string, string>;
  query?: z.ZodObject;
  headers?: Array<'Idempotency-Key' | 'Last-Event-ID' | 'Prefer'>;
  body?: { id: string; schema: z.ZodType };
  responses: SuccessResponse[];
  /** Error answers besides 401, which every operation with a key has. */
  errors?: ErrorStatus[];
  /** Served only on the internal admin listener when ADMIN_PORT is set (the public port then answers 404). */
  adminListener?: true;
}

/** What sse.ts accepts as Last-Event-ID (header or `last_event_id` query). */
export const lastEventIdSchema = z
  .string()
  .regex(/^\d{1,15}$/)
  .meta({ description: 'resume after this event id (what EventSource sends on reconnect)' });

const generationId = { id: 'the generation id (gen_...)' };
/** What Prefer: wait does on a submit (and a rerun). */
const submitWait =
  ' With `Prefer: wait=N` (1 ≤ N ≤ 60; any other value is ignored, RFC 7240) the answer waits up to N seconds for the job to end: ' +
  '200 with the ended job, or 202 with its state after N seconds, either with `Preference-Applied: wait=N`. At most ' +
  'PREFER_WAIT_MAX_PER_USER waiting requests per user (20) per API process: beyond, 429 too_many_waits (or wait_capacity_reached) and nothing is submitted.';
const submitHeaders: ResponseHeader[] = ['Location', 'Idempotent-Replayed', 'RateLimit', 'RateLimit-Policy', 'Preference-Applied'];
const endpointId = { id: 'the webhook endpoint id' };
const sseQuery = z.object({ last_event_id: lastEventIdSchema.optional() });
const generationEvents = [
  { names: ['queued', 'running', 'succeeded', 'failed', 'canceled', 'expired', 'updated'].map((s) => `generation.${s}`), data: res.generationEventData },
  { names: ['generation.queue_position'], data: res.queuePositionEventData },
  { names: ['stream.resync_required'], data: res.resyncEventData },
  { names: ['stream.closed'], data: res.streamClosedEventData },
];
/** What both event streams say about resuming, limits and their end. */
const streamRules =
  ' A resume replays at most SSE_RESUME_MAX_EVENTS events (1,000) no older than SSE_RESUME_MAX_AGE_MS (1 hour); further back, the stream ' +
  'sends `stream.resync_required` (list your generations again) and goes on live. A client that reads nothing for SSE_SLOW_CLIENT_MS while ' +
  'events wait is disconnected (resume with Last-Event-ID). A revoked API key ends its streams within seconds with `stream.closed`. ' +
  'At most SSE_MAX_STREAMS_PER_USER streams per user (20) per API process: beyond, 429 too_many_streams (or stream_capacity_reached).';

const inputsChecked =
  ' Inputs beyond the text are checked before admission: an `input_reference` image through the SSRF guard (refused ' +
  'addresses), then by a HEAD (a ranged GET where HEAD is refused) within INPUT_REFERENCE_TIMEOUT_MS for an image/* of at ' +
  'most 10 MB (400 invalid_input_reference, details.reason saying which); `remix_of` must name a succeeded generation of ' +
  'yours (404 remix_source_not_found, also for another user\'s; 409 remix_source_not_succeeded). A retry with a key already ' +
  'taken is not checked again: it replays its job.';

export const operations: Operation[] = [
  {
    method: 'post',
    path: '/v1/generations',
    operationId: 'createGeneration',
    tag: 'generations',
    summary: 'Submit a prompt',
    description:
      'Answers 202 at once with the queued job and its Location. With an Idempotency-Key, a retry returns the same job ' +
      '(Idempotent-Replayed: true) and the same key with another body is 422. Admission limits answer 429 with Retry-After.' +
      submitWait +
      inputsChecked,
    auth: 'user',
    headers: ['Idempotency-Key', 'Prefer'],
    body: { id: 'CreateGenerationRequest', schema: createGenerationBody },
    responses: [
      { status: 200, description: 'accepted, and ended within Prefer: wait', schema: res.generationResource, headers: submitHeaders },
      { status: 202, description: 'accepted (or replayed)', schema: res.generationResource, headers: submitHeaders },
    ],
    errors: [400, 402, 404, 409, 422, 429, 503],
  },
  {
    method: 'post',
    path: '/v1/generations/estimate',
    operationId: 'estimateGeneration',
    tag: 'generations',
    summary: 'What a submit of this body would get now',
    description:
      'Takes a submit body and answers its price, whether a submit would be admitted now and, if not, the code and message it ' +
      'would be refused with (the same admission runs and is rolled back: no rate-limit token is taken, nothing is reserved or ' +
      'written), and the queue position and ETA it would start with. At most ESTIMATE_BURST estimates at once per user and ' +
      'ESTIMATES_PER_SECOND after (429 estimate_rate_limited). A body a submit would refuse as invalid is 400 here too, and its ' +
      '`input_reference` and `remix_of` are checked as a submit\'s are (400, 404, 409).',
    auth: 'user',
    body: { id: 'CreateGenerationRequest', schema: createGenerationBody },
    responses: [{ status: 200, description: 'the estimate', schema: res.generationEstimate }],
    errors: [400, 404, 409, 429],
  },
  {
    method: 'get',
    path: '/v1/generations',
    operationId: 'listGenerations',
    tag: 'generations',
    summary: 'List my generations, newest first',
    description: 'Keyset-paginated: pass next_cursor as cursor while has_more.',
    auth: 'user',
    query: listGenerationsQuery,
    responses: [{ status: 200, description: 'one page', schema: res.generationList }],
    errors: [400],
  },
  {
    method: 'get',
    path: '/v1/generations/:id',
    operationId: 'getGeneration',
    tag: 'generations',
    summary: 'Read one generation',
    description:
      'With `Prefer: wait=N` (1 ≤ N ≤ 60; any other value is ignored, RFC 7240) the answer waits up to N seconds for the job to ' +
      'end, woken by the change feed, and carries `Preference-Applied: wait=N`: the ended job, or its state after N seconds. At ' +
      'most PREFER_WAIT_MAX_PER_USER waiting requests per user (20) per API process: beyond, 429 too_many_waits (or wait_capacity_reached).',
    auth: 'user',
    pathParams: generationId,
    headers: ['Prefer'],
    responses: [{ status: 200, description: 'the generation', schema: res.generationResource, headers: ['Preference-Applied'] }],
    errors: [404, 429],
  },
  {
    method: 'post',
    path: '/v1/generations/:id/cancel',
    operationId: 'cancelGeneration',
    tag: 'generations',
    summary: 'Cancel a queued or running generation',
    description:
      '202 while the cancellation is on its way, 200 once canceled; 409 when it already succeeded or failed. `Backend-Cancel: unsupported` ' +
      'says the job had reached a backend without a cancel (Veo): the job ends canceled and is not charged, but the backend may render it to its end.',
    auth: 'user',
    pathParams: generationId,
    responses: [
      { status: 200, description: 'canceled', schema: res.generationResource, headers: ['Backend-Cancel'] },
      { status: 202, description: 'cancellation requested', schema: res.generationResource, headers: ['Backend-Cancel'] },
    ],
    errors: [404, 409, 503],
  },
  {
    method: 'post',
    path: '/v1/generations/:id/retry',
    operationId: 'retryGeneration',
    tag: 'generations',
    summary: 'Run one of my generations again',
    description:
      'A new job with the same request as the one named (whatever its status), its `retry_of` naming it; answered 202 like a ' +
      'submit, under the same admission (rate, active jobs, daily quota, backlog, credits: 402/429). With an Idempotency-Key of ' +
      'its own, a retry of the call returns the same new job (Idempotent-Replayed: true); a key used for a submit or a rerun ' +
      'of another job is 422; without a key every call makes a new job. Its `input_reference` and `remix_of` are checked again, ' +
      'as a submit\'s are.' +
      submitWait,
    auth: 'user',
    pathParams: generationId,
    headers: ['Idempotency-Key', 'Prefer'],
    responses: [
      { status: 200, description: 'the new job, ended within Prefer: wait', schema: res.generationResource, headers: submitHeaders },
      { status: 202, description: 'the new job (or the replayed one)', schema: res.generationResource, headers: submitHeaders },
    ],
    errors: [400, 402, 404, 409, 422, 429, 503],
  },
  ...batchOperations(),
  {
    method: 'get',
    path: '/v1/events',
    operationId: 'streamEvents',
    tag: 'events',
    summary: "Live events of all my generations (Server-Sent Events)",
    description: 'Starts from now, or after Last-Event-ID. Comments are keep-alives. Send the API key as a bearer header.' + streamRules,
    auth: 'user',
    headers: ['Last-Event-ID'],
    query: sseQuery,
    responses: [{ status: 200, description: 'an event stream', events: generationEvents }],
    errors: [400, 429],
  },
  {
    method: 'get',
    path: '/v1/generations/:id/events',
    operationId: 'streamGenerationEvents',
    tag: 'events',
    summary: 'Live events of one generation (Server-Sent Events)',
    description: "Replays the job's events from its first, or after Last-Event-ID, then follows it live." + streamRules,
    auth: 'user',
    pathParams: generationId,
    headers: ['Last-Event-ID'],
    query: sseQuery,
    responses: [{ status: 200, description: 'an event stream', events: generationEvents }],
    errors: [400, 404, 429],
  },
  {
    method: 'get',
    path: '/v1/notifications',
    operationId: 'listNotifications',
    tag: 'notifications',
    summary: 'My in-app notifications, newest first',
    description: 'Exactly one per finished generation.',
    auth: 'user',
    query: listNotificationsQuery,
    responses: [{ status: 200, description: 'one page', schema: res.notificationList }],
    errors: [400],
  },
  {
    method: 'post',
    path: '/v1/notifications/:id/read',
    operationId: 'markNotificationRead',
    tag: 'notifications',
    summary: 'Mark a notification read',
    auth: 'user',
    pathParams: { id: 'the notification id' },
    responses: [{ status: 200, description: 'the notification', schema: res.notificationResource }],
    errors: [404],
  },
  {
    method: 'get',
    path: '/v1/notification-settings',
    operationId: 'getNotificationSettings',
    tag: 'notifications',
    summary: 'My email notifications',
    description: 'Unset, no mail is sent: `email` null, every ending in `on`, a 300 s digest.',
    auth: 'user',
    responses: [{ status: 200, description: 'the settings', schema: res.notificationSettingsResource }],
  },
  {
    method: 'put',
    path: '/v1/notification-settings',
    operationId: 'putNotificationSettings',
    tag: 'notifications',
    summary: 'Set my email notifications',
    description:
      'A new address is unverified: a link is mailed to it (one per minute at most), which verifies it with a plain GET, once, within 24 hours; nothing else is mailed before. ' +
      'Each ending in `on` is then mailed at most once; endings within `digest_seconds` of the first share one mail (a batch of 100 is one mail). ' +
      'Every mail carries an unsubscribe link (and `List-Unsubscribe`). Omitted `on` and `digest_seconds` keep their values. ' +
      '503 `mail_unavailable`: saved, but the verification mail could not be sent (PUT again).',
    auth: 'user',
    body: { id: 'NotificationSettingsRequest', schema: notificationSettingsBody },
    responses: [{ status: 200, description: 'the settings', schema: res.notificationSettingsResource }],
    errors: [400, 503],
  },
  {
    method: 'get',
    path: '/v1/notification-settings/verify',
    operationId: 'verifyNotificationEmail',
    tag: 'notifications',
    summary: "Verify an address (the link mailed to it)",
    description: 'No key: the token is the proof. Single use, 24 hours. A browser (Accept: text/html) gets a line of HTML.',
    auth: 'none',
    query: emailLinkQuery,
    responses: [{ status: 200, description: 'verified', schema: res.emailLinkResult }],
    errors: [400, 404],
  },
  {
    method: 'get',
    path: '/v1/notification-settings/unsubscribe',
    operationId: 'unsubscribeNotificationEmail',
    tag: 'notifications',
    summary: 'Stop email notifications (the link every mail carries)',
    description: 'No key: the token is the proof. Sets `on` to []; a new address gets a new token. A browser (Accept: text/html) gets a line of HTML.',
    auth: 'none',
    query: emailLinkQuery,
    responses: [{ status: 200, description: 'unsubscribed', schema: res.emailLinkResult }],
    errors: [400, 404],
  },
  {
    method: 'post',
    path: '/v1/notification-settings/unsubscribe',
    operationId: 'unsubscribeNotificationEmailOneClick',
    tag: 'notifications',
    summary: 'Stop email notifications, one click (RFC 8058)',
    description: 'What a mail client POSTs for `List-Unsubscribe-Post: List-Unsubscribe=One-Click`; the same as the GET.',
    auth: 'none',
    query: emailLinkQuery,
    responses: [{ status: 200, description: 'unsubscribed', schema: res.emailLinkResult }],
    errors: [400, 404],
  },
  {
    method: 'get',
    path: '/v1/usage',
    operationId: 'getUsage',
    tag: 'usage',
    summary: 'My tier, credits and admission limits',
    auth: 'user',
    responses: [{ status: 200, description: 'usage', schema: res.usage }],
  },
  {
    method: 'post',
    path: '/v1/webhook-endpoints',
    operationId: 'createWebhookEndpoint',
    tag: 'webhooks',
    summary: 'Add a webhook endpoint',
    description: 'The answer carries the signing secret (Standard Webhooks, whsec_...); private and loopback hosts are refused.',
    auth: 'user',
    body: { id: 'CreateWebhookEndpointRequest', schema: createEndpointBody },
    responses: [{ status: 201, description: 'created', schema: res.webhookEndpointResource, headers: ['Location'] }],
    errors: [400, 409],
  },
  {
    method: 'get',
    path: '/v1/webhook-endpoints',
    operationId: 'listWebhookEndpoints',
    tag: 'webhooks',
    summary: 'My webhook endpoints',
    auth: 'user',
    responses: [{ status: 200, description: 'all of them', schema: res.webhookEndpointList }],
  },
  ...endpointOperations(),
  ...apiKeyOperations(),
  {
    method: 'get',
    path: '/v1/webhook-secret',
    operationId: 'getRequestWebhookSecret',
    tag: 'webhooks',
    summary: "The secret that signs deliveries to a request's webhook_url",
    auth: 'user',
    responses: [{ status: 200, description: 'the secret', schema: res.webhookSecret }],
  },
  ...adminOperations(),
];

/** Batches: submit many bodies at once, all admitted or none; read, list, cancel. */
function batchOperations(): Operation[] {
  const base = { tag: 'batches', auth: 'user' } as const;
  const batchId = { id: 'the batch id (batch_...)' };
  return [
    {
      ...base,
      method: 'post',
      path: '/v1/batches',
      operationId: 'createBatch',
      summary: `Submit up to ${MAX_BATCH_ITEMS} prompts at once, all admitted or none`,
      description:
        'Each item is a submit body (CreateGenerationRequest) and becomes a generation carrying the batch id as `batch_id`. ' +
        'The batch is admitted whole or refused whole with the refusal a submit would get, counting every item: it takes one ' +
        'rate-limit token, and its items count against the daily quota and the credits together (402, details.needed is the whole ' +
        'batch), and against their own lane\'s active jobs and tier backlog (429: items with priority "batch" against the batch ' +
        'lane\'s, too_many_active_batch_jobs; the others against the interactive lane\'s, too_many_active_jobs); a batch may mix ' +
        'both lanes. A refused batch creates nothing and holds no credits. With an Idempotency-Key, ' +
        'a retry returns the same batch (Idempotent-Replayed: true); another body, or a key used for a submit, is 422. A bad item ' +
        'is 400 invalid_batch_item, its index in details.index (and its own error code in details.code); an empty batch or one of ' +
        `more than ${MAX_BATCH_ITEMS} items is 400 invalid_request. An item's refused input_reference is 400 invalid_batch_item ` +
        '(details.code invalid_input_reference), its remix_of the submit\'s 404 or 409 with details.index; each distinct image is checked once. ' +
        `The body may be up to 4 MB (413 beyond). Answered once the ` +
        "batch is admitted and its first item started; the other items' workflows start right after (their generations read queued). " +
        'When the last item ends, one `batch.completed` notification and webhook event follow, besides each item\'s own.',
      headers: ['Idempotency-Key'],
      body: { id: 'CreateBatchRequest', schema: createBatchBody },
      responses: [{ status: 202, description: 'admitted (or replayed)', schema: batchResource, headers: ['Location', 'Idempotent-Replayed', 'RateLimit', 'RateLimit-Policy'] }],
      errors: [400, 402, 404, 409, 422, 429, 503],
    },
    {
      ...base,
      method: 'get',
      path: '/v1/batches',
      operationId: 'listBatches',
      summary: 'List my batches, newest first',
      description: 'Keyset-paginated: pass next_cursor as cursor while has_more. The items of one: GET /v1/generations?batch_id=.',
      query: listBatchesQuery,
      responses: [{ status: 200, description: 'one page', schema: batchList }],
      errors: [400],
    },
    {
      ...base,
      method: 'get',
      path: '/v1/batches/:id',
      operationId: 'getBatch',
      summary: 'Read one batch: its items counted by status',
      pathParams: batchId,
      responses: [{ status: 200, description: 'the batch', schema: batchResource }],
      errors: [404],
    },
    {
      ...base,
      method: 'post',
      path: '/v1/batches/:id/cancel',
      operationId: 'cancelBatch',
      summary: 'Cancel the items of a batch that have not ended',
      description:
        'Each queued or running item is canceled as POST /v1/generations/{id}/cancel would; ended items stay as they are. 202 ' +
        'while items are still ending (the batch reads `canceling`), 200 once every item ended (`canceled`); a second cancel is ' +
        'harmless. 409 batch_already_completed when every item had ended before the cancel.',
      pathParams: batchId,
      responses: [
        { status: 200, description: 'every item ended', schema: batchResource },
        { status: 202, description: 'cancellation requested', schema: batchResource },
      ],
      errors: [404, 409, 503],
    },
  ];
}

/** One endpoint's operations: read, delete, rotate the secret, re-enable, delivery log, replay. */
function endpointOperations(): Operation[] {
  const base = { tag: 'webhooks', auth: 'user', pathParams: endpointId } as const;
  return [
    { ...base, method: 'get', path: '/v1/webhook-endpoints/:id', operationId: 'getWebhookEndpoint', summary: 'Read a webhook endpoint', responses: [{ status: 200, description: 'the endpoint', schema: res.webhookEndpointResource }], errors: [404] },
    { ...base, method: 'delete', path: '/v1/webhook-endpoints/:id', operationId: 'deleteWebhookEndpoint', summary: 'Delete a webhook endpoint', responses: [{ status: 200, description: 'deleted', schema: res.deletedWebhookEndpoint }], errors: [404] },
    {
      ...base,
      method: 'post',
      path: '/v1/webhook-endpoints/:id/rotate-secret',
      operationId: 'rotateWebhookEndpointSecret',
      summary: 'Rotate the signing secret',
      description: 'The previous secret keeps signing (second signature) for overlap_seconds.',
      body: { id: 'RotateWebhookSecretRequest', schema: rotateSecretBody },
      responses: [{ status: 200, description: 'the endpoint with its new secret', schema: res.webhookEndpointResource }],
      errors: [400, 404],
    },
    { ...base, method: 'post', path: '/v1/webhook-endpoints/:id/enable', operationId: 'enableWebhookEndpoint', summary: 'Re-enable a disabled endpoint', responses: [{ status: 200, description: 'the endpoint', schema: res.webhookEndpointResource }], errors: [404] },
    {
      ...base,
      method: 'get',
      path: '/v1/webhook-endpoints/:id/deliveries',
      operationId: 'listWebhookDeliveries',
      summary: "The endpoint's delivery log, newest first",
      query: deliveriesQuery,
      responses: [{ status: 200, description: 'one page', schema: res.webhookDeliveryList }],
      errors: [400, 404],
    },
    {
      ...base,
      method: 'post',
      path: '/v1/webhook-endpoints/:id/deliveries/:deliveryId/replay',
      operationId: 'replayWebhookDelivery',
      summary: 'Deliver an event again',
      description: 'At most WEBHOOK_REPLAYS_PER_MINUTE replays per user a minute (429 replay_rate_limited), and WEBHOOK_MAX_REPLAYS of one delivery (409 replay_limit_reached).',
      pathParams: { ...endpointId, deliveryId: 'the delivery id (whd_...)' },
      responses: [{ status: 202, description: 'the replay started', schema: res.webhookDeliveryResource }],
      errors: [404, 409, 429, 503],
    },
  ];
}

/** A user's own keys, and an operator's hold on anyone's. */
function apiKeyOperations(): Operation[] {
  const admin = { tag: 'admin', auth: 'admin', adminListener: true } as const;
  const userId = { id: 'the user id (usr_...)' };
  const revokeNote = `A revoked key gets 401 at once on the API process that answered, and on the others within ${AUTH_CACHE_MS / 1000} s (their auth cache).`;
  return [
    { method: 'get', path: '/v1/api-keys', operationId: 'listApiKeys', tag: 'api-keys', auth: 'user', summary: 'My API keys, newest first (prefixes and dates, never the keys)', responses: [{ status: 200, description: 'all of them', schema: res.apiKeyList }] },
    {
      method: 'post',
      path: '/v1/api-keys/rotate',
      operationId: 'rotateApiKey',
      tag: 'api-keys',
      auth: 'user',
      summary: 'Replace the key this call is made with',
      description:
        'Answers the new key once. The key used for the call stops working at once, or after grace_seconds (at most a day) so ' +
        'deployed clients can switch; a key already rotated cannot rotate again (409 api_key_retiring). ' +
        `409 too_many_api_keys past ${MAX_LIVE_KEYS} working keys. ${revokeNote}`,
      body: { id: 'RotateApiKeyRequest', schema: rotateApiKeyBody },
      responses: [{ status: 201, description: 'the new key, and the old one with the time it stops working', schema: res.apiKeyRotation }],
      errors: [400, 409],
    },
    { ...admin, method: 'get', path: '/admin/users/:id/api-keys', operationId: 'listUserApiKeys', summary: "A user's API keys, newest first", pathParams: userId, responses: [{ status: 200, description: 'all of them', schema: res.apiKeyList }], errors: [404] },
    {
      ...admin,
      method: 'post',
      path: '/admin/users/:id/api-keys',
      operationId: 'issueUserApiKey',
      summary: 'Issue a new key to a user (after a revocation, say); returns it once',
      pathParams: userId,
      responses: [{ status: 201, description: 'the new key', schema: res.issuedApiKey }],
      errors: [404, 409],
    },
    {
      ...admin,
      method: 'post',
      path: '/admin/users/:id/api-keys/revoke',
      operationId: 'revokeUserApiKeys',
      summary: "Revoke all of a user's working keys now",
      description: `Also ends any rotation grace period. ${revokeNote}`,
      pathParams: userId,
      responses: [{ status: 200, description: "the user's keys afterwards", schema: res.apiKeyList }],
      errors: [404],
    },
    {
      ...admin,
      method: 'post',
      path: '/admin/users/:id/api-keys/:keyId/revoke',
      operationId: 'revokeUserApiKey',
      summary: 'Revoke one key of a user now',
      description: `Idempotent: a key already revoked keeps its time. ${revokeNote}`,
      pathParams: { ...userId, keyId: 'the key id (key_...)' },
      responses: [{ status: 200, description: 'the key', schema: res.apiKeyResource }],
      errors: [404],
    },
  ];
}

/** Operator endpoints behind the admin key, and the public meta routes. */
function adminOperations(): Operation[] {
  const admin = { tag: 'admin', auth: 'admin', adminListener: true } as const;
  const meta = { tag: 'meta', auth: 'none', method: 'get' } as const;
  return [
    {
      ...admin,
      method: 'post',
      path: '/admin/users',
      operationId: 'createUser',
      summary: 'Create a user of a tier; returns its API key once',
      body: { id: 'CreateUserRequest', schema: createUserBody },
      responses: [{ status: 201, description: 'created', schema: res.createdUser }],
      errors: [400],
    },
    { ...admin, method: 'get', path: '/admin/generations/stuck', operationId: 'listStuckGenerations', summary: 'Running jobs past their expected time', responses: [{ status: 200, description: 'stuck jobs, most overdue first', schema: res.stuckGenerations }] },
    {
      ...admin,
      method: 'get',
      path: '/admin/capacity',
      operationId: 'getGpuCapacity',
      summary: "The GPU pool's live capacity and slot use",
      query: capacityQuery,
      responses: [{ status: 200, description: 'capacity', schema: res.gpuCapacity }],
      errors: [400],
    },
    {
      ...admin,
      method: 'put',
      path: '/admin/capacity',
      operationId: 'setGpuCapacity',
      summary: "Set the operator's capacity (null clears it)",
      body: { id: 'SetGpuCapacityRequest', schema: capacityBody },
      responses: [{ status: 200, description: 'capacity', schema: res.gpuCapacity }],
      errors: [400],
    },
    { ...meta, path: '/healthz', operationId: 'health', summary: 'Liveness', responses: [{ status: 200, description: 'the process answers', schema: res.health }] },
    {
      ...meta,
      path: '/readyz',
      operationId: 'readiness',
      summary: 'Readiness: Postgres and Temporal answer',
      description: 'With ADMIN_PORT set, the public port answers only the status; the admin listener adds the checks.',
      responses: [
        { status: 200, description: 'ready', schema: res.readiness },
        { status: 503, description: 'not ready; checks name what does not answer', schema: res.readiness },
      ],
    },
    { ...meta, adminListener: true, path: '/metrics', operationId: 'metrics', summary: 'Prometheus metrics', responses: [{ status: 200, description: 'the text exposition format', text: 'text/plain' }] },
    { ...meta, path: '/openapi.json', operationId: 'openApiDocument', summary: 'This document', responses: [{ status: 200, description: 'OpenAPI 3.1', schema: z.record(z.string(), z.unknown()) }] },
  ];
}
