import { z } from 'zod';
import { errorResponse, responseComponents, webhookEvent } from '../wire/resources';
import { batchWebhookEvent } from '../wire/batches';
import { idempotencyKeyHeader } from '../wire/requests';
import { lastEventIdSchema, operations, type ErrorStatus, type Operation, type SuccessResponse } from './openapi-operations';
import { MAX_WAIT_SECONDS } from './prefer-wait';

/**
 * The OpenAPI 3.1 document, generated from the zod schemas the routes validate with (src/wire/requests.ts and the route
 * modules), the response schemas in src/wire/resources.ts and the operation list in openapi-operations.ts. Never hand-written.
 */

type Json = Record<string, unknown>;
const ref = (kind: 'schemas' | 'responses' | 'headers' | 'parameters', id: string) => ({ $ref: `#/components/${kind}/${id}` });

/** `/v1/generations/:id` → `/v1/generations/{id}`. */
export function openApiPath(expressPath: string): string {
  return expressPath.replace(/:(\w+)/g, '{$1}');
}

const ERRORS: Record<ErrorStatus, { name: string; description: string; headers?: string[] }> = {
  400: { name: 'BadRequest', description: 'invalid_request (the message names the field; details.issues lists every one), invalid_batch_item (details.index names the item), invalid_json, invalid_cursor, invalid_webhook_url, invalid_input_reference (the input image was refused: details.reason is refused_address, unreachable, not_an_image or too_large), ...' },
  401: { name: 'Unauthorized', description: 'unauthorized: a valid API key is required', headers: ['WWW-Authenticate'] },
  402: { name: 'InsufficientCredits', description: 'insufficient_credits: details.needed and details.available' },
  404: { name: 'NotFound', description: "not_found: it does not exist, or it is another user's; remix_source_not_found: remix_of names no generation of yours (another user's answers alike)" },
  409: {
    name: 'Conflict',
    description: 'remix_source_not_succeeded (remix_of names a generation of yours that has not succeeded: details.status), generation_already_finished, batch_already_completed, batch_in_progress (a replay met its batch being undone), too_many_endpoints, endpoint_disabled, delivery_in_progress, replay_limit_reached, too_many_api_keys or api_key_retiring',
  },
  422: { name: 'IdempotencyKeyReused', description: 'idempotency_key_reused: this Idempotency-Key was used with another body' },
  429: {
    name: 'TooManyRequests',
    description:
      'rate_limited, too_many_active_jobs, too_many_active_batch_jobs, daily_quota_exceeded or capacity_exhausted (submits); estimate_rate_limited (estimates); too_many_streams or stream_capacity_reached (event streams); ' +
      'too_many_waits or wait_capacity_reached (Prefer: wait); too_many_input_checks or input_check_capacity_reached (input_reference images being checked); ' +
      'replay_rate_limited (webhook replays); too_many_failed_auth (this address failed to authenticate too often: keys the server does not know are refused unread); retry after Retry-After',
    headers: ['Retry-After', 'RateLimit', 'RateLimit-Policy'],
  },
  503: {
    name: 'ServiceUnavailable',
    description:
      'temporal_unavailable (Temporal refused or could not take the request), database_unavailable (Postgres cannot be reached) or database_timeout: nothing was done; retry after Retry-After (too_many_connections: the server has as many connections as it takes)',
    headers: ['Retry-After'],
  },
};

const HEADERS: Record<string, { description: string; schema: Json }> = {
  Location: { description: 'the path of the resource', schema: { type: 'string' } },
  'Idempotent-Replayed': { description: '`true` when this answer replays an earlier submit with the same Idempotency-Key', schema: { type: 'string', enum: ['true'] } },
  RateLimit: { description: 'what is left of each quota (draft-ietf-httpapi-ratelimit-headers)', schema: { type: 'string' } },
  'RateLimit-Policy': { description: 'the quota policies', schema: { type: 'string' } },
  'Retry-After': { description: 'seconds to wait before retrying', schema: { type: 'integer' } },
  'Preference-Applied': { description: '`wait=N` when the Prefer: wait=N of the request was honoured (RFC 7240)', schema: { type: 'string' } },
  'WWW-Authenticate': { description: '`Bearer`', schema: { type: 'string' } },
  'Backend-Cancel': {
    description: '`unsupported`: the job had reached a backend that cannot stop it (Veo); it ends canceled here and is not charged, while the backend may render it to its end',
    schema: { type: 'string', enum: ['unsupported'] },
  },
};

/** Drops what JSON Schema output adds but a reader does not need: $schema/$id, date-time regexes, ±2^53 integer bounds. */
function tidy(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(tidy);
  if (value === null || typeof value !== 'object') return value;
  const out: Json = {};
  for (const [key, inner] of Object.entries(value)) {
    if (key === '$schema' || key === '$id') continue;
    if (key === 'pattern' && (value as Json).format === 'date-time') continue;
    if ((key === 'minimum' || key === 'maximum') && Math.abs(Number(inner)) === Number.MAX_SAFE_INTEGER) continue;
    out[key] = tidy(inner);
  }
  return out;
}

const jsonSchema = (schema: z.ZodType) => tidy(z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' })) as Json;

/** Every response and request body schema as a named component; `refTo` gives a $ref for a registered schema. */
function components() {
  const registry = z.registry<{ id: string }>();
  const ids = new Map<z.ZodType, string>();
  const add = (id: string, schema: z.ZodType) => {
    if (ids.has(schema)) return;
    registry.add(schema, { id });
    ids.set(schema, id);
  };
  for (const [id, schema] of Object.entries(responseComponents)) add(id, schema);
  for (const op of operations) if (op.body) add(op.body.id, op.body.schema);
  const { schemas } = z.toJSONSchema(registry, { io: 'input', unrepresentable: 'any', uri: (id) => `#/components/schemas/${id}` });
  const refTo = (schema: z.ZodType): Json => {
    const id = ids.get(schema);
    return id ? ref('schemas', id) : jsonSchema(schema);
  };
  return { schemas: tidy(schemas) as Record<string, Json>, refTo };
}

const HEADER_PARAMETERS: Record<NonNullable<Operation['headers']>[number], string> = { 'Idempotency-Key': 'IdempotencyKey', 'Last-Event-ID': 'LastEventId', Prefer: 'Prefer' };

function parameters(op: Operation): Json[] {
  const path = [...op.path.matchAll(/:(\w+)/g)].map(([, name]) => ({
    name,
    in: 'path',
    required: true,
    description: op.pathParams?.[name],
    schema: { type: 'string' },
  }));
  const headers = (op.headers ?? []).map((name) => ref('parameters', HEADER_PARAMETERS[name]));
  const query: Json[] = [];
  if (op.query) {
    const schema = jsonSchema(op.query) as { properties?: Record<string, Json>; required?: string[] };
    for (const [name, property] of Object.entries(schema.properties ?? {})) {
      const { description, ...rest } = property;
      query.push({ name, in: 'query', required: schema.required?.includes(name) ?? false, description, schema: rest });
    }
  }
  return [...path, ...headers, ...query];
}

function successResponse(response: SuccessResponse, refTo: (schema: z.ZodType) => Json): Json {
  const headers = response.headers && Object.fromEntries(response.headers.map((name) => [name, ref('headers', name)]));
  if (response.events) {
    const events = response.events.map((e) => `\`${e.names.join('`, `')}\`: data is ${(refTo(e.data).$ref as string).split('/').pop()}`);
    return {
      description: `${response.description}: \`id:\`/\`event:\`/\`data:\` blocks, data being JSON. ${events.join('; ')}.`,
      headers,
      content: {
        'text/event-stream': {
          schema: { type: 'string' },
          'x-events': response.events.map((e) => ({ names: e.names, data: refTo(e.data) })),
        },
      },
    };
  }
  if (response.text) return { description: response.description, headers, content: { [response.text]: { schema: { type: 'string' } } } };
  return { description: response.description, headers, content: response.schema ? { 'application/json': { schema: refTo(response.schema) } } : undefined };
}

function operationObject(op: Operation, refTo: (schema: z.ZodType) => Json): Json {
  const responses: Json = {};
  for (const response of op.responses) responses[String(response.status)] = successResponse(response, refTo);
  const errors = new Set<ErrorStatus>(op.errors ?? []);
  if (op.auth !== 'none') errors.add(401);
  // An address that failed to authenticate too often is refused unknown keys (too_many_failed_auth); any query may
  // outlast DATABASE_STATEMENT_TIMEOUT_MS (database_timeout).
  if (op.auth === 'user') for (const status of [429, 503] as const) errors.add(status);
  for (const status of [...errors].sort((a, b) => a - b)) responses[String(status)] = ref('responses', ERRORS[status].name);
  return {
    operationId: op.operationId,
    tags: [op.tag],
    summary: op.summary,
    description: op.adminListener ? [op.description, ADMIN_LISTENER_NOTE].filter(Boolean).join(' ') : op.description,
    security: op.auth === 'none' ? [] : [{ [op.auth === 'admin' ? 'adminKey' : 'apiKey']: [] }],
    parameters: parameters(op),
    requestBody: op.body && { required: true, content: { 'application/json': { schema: refTo(op.body.schema) } } },
    responses,
  };
}

const ADMIN_LISTENER_NOTE = 'With ADMIN_PORT set, served only on the internal admin listener (the public port answers 404).';

/** Drops undefined members, which JSON would drop anyway, so the document equals its own JSON. */
const pruned = <T>(value: T): T => JSON.parse(JSON.stringify(value)) as T;

function buildDocument(): Json {
  const { schemas, refTo } = components();
  const paths: Record<string, Json> = {};
  for (const op of operations) {
    const path = (paths[openApiPath(op.path)] ??= {});
    path[op.method] = operationObject(op, refTo);
  }
  return pruned({
    openapi: '3.1.0',
    info: {
      title: 'videogen-orchestrator API',
      version: '1',
      description:
        'Text-to-video generation jobs orchestrated on Temporal. Every /v1 request carries `Authorization: Bearer <api key>`; ' +
        'errors are `{"error": {"code", "message", "details"?}}`; JSON field names are snake_case.',
    },
    tags: [
      { name: 'generations', description: 'submit, read, list and cancel jobs' },
      { name: 'batches', description: 'many jobs admitted together, counted and canceled together' },
      { name: 'events', description: 'live updates over Server-Sent Events' },
      { name: 'notifications', description: 'the in-app inbox' },
      { name: 'webhooks', description: 'webhook endpoints and their delivery log (Standard Webhooks signatures)' },
      { name: 'usage', description: 'credits and limits' },
      { name: 'api-keys', description: 'my API keys: list and rotate' },
      { name: 'admin', description: 'operator endpoints, behind the admin key' },
      { name: 'meta', description: 'health and this document' },
    ],
    paths,
    webhooks: {
      generationEnded: {
        post: {
          summary: 'A generation ended (sent to webhook endpoints and to a request webhook_url)',
          description: 'Signed per Standard Webhooks: webhook-id (stable across retries), webhook-timestamp, webhook-signature. Answer 2xx; 410 disables the endpoint.',
          requestBody: { required: true, content: { 'application/json': { schema: refTo(webhookEvent) } } },
          responses: { '2XX': { description: 'received' } },
        },
      },
      batchCompleted: {
        post: {
          summary: "A batch's last item ended (sent to webhook endpoints; once per batch, besides each item's own event)",
          description: 'Signed as every webhook. The data is the batch as GET /v1/batches/{id} reads it when it completed.',
          requestBody: { required: true, content: { 'application/json': { schema: refTo(batchWebhookEvent) } } },
          responses: { '2XX': { description: 'received' } },
        },
      },
    },
    components: {
      securitySchemes: {
        apiKey: { type: 'http', scheme: 'bearer', description: "a user's API key (vg_...)" },
        adminKey: { type: 'http', scheme: 'bearer', description: 'the admin key (ADMIN_API_KEY)' },
      },
      schemas,
      parameters: {
        IdempotencyKey: {
          name: 'Idempotency-Key',
          in: 'header',
          required: false,
          description: 'makes a submit safe to retry: the same key and body return the same job',
          schema: jsonSchema(idempotencyKeyHeader),
        },
        LastEventId: { name: 'Last-Event-ID', in: 'header', required: false, description: lastEventIdSchema.description, schema: jsonSchema(lastEventIdSchema) },
        Prefer: {
          name: 'Prefer',
          in: 'header',
          required: false,
          description: `RFC 7240 preferences; \`wait=N\` (an integer of seconds, 1 to ${MAX_WAIT_SECONDS}) waits up to N seconds for the job to end. Other values and preferences are ignored`,
          schema: { type: 'string', examples: ['wait=30'] },
        },
      },
      headers: HEADERS,
      responses: Object.fromEntries(
        Object.values(ERRORS).map(({ name, description, headers }) => [
          name,
          {
            description,
            headers: headers && Object.fromEntries(headers.map((h) => [h, ref('headers', h)])),
            content: { 'application/json': { schema: refTo(errorResponse) } },
          },
        ]),
      ),
    },
  });
}

let built: Json | undefined;

/** The document, built once: it depends only on code. */
export function openApiDocument(): Json {
  built ??= buildDocument();
  return built;
}
