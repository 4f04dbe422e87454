import { execFileSync } from 'node:child_process';
import type { Express } from 'express';
import { z } from 'zod';
import type { Admission } from '../src/api/admission';
import * as documented from '../src/wire/resources';
import { createAdminApp } from '../src/api/admin-app';
import { createApp } from '../src/api/app';
import { loadConfig } from '../src/config';
import { openApiDocument, openApiPath } from '../src/api/openapi';
import { operations, type ErrorStatus } from '../src/api/openapi-operations';
import type { toApiKeyResource } from '../src/api/api-keys';
import type { creditBalance } from '../src/credits/ledger';
import type { usageByBackend } from '../src/db/projection';
import { createLogger } from '../src/lib/logger';
import type { toDeliveryResource } from '../src/notifications/delivery-store';
import type { toEndpointResource } from '../src/notifications/endpoint-store';
import type { toNotificationResource } from '../src/notifications/inbox';
import type { toBatchResource, batchResource } from '../src/wire/batches';
import { openEventStream, startWebhookReceiver, type EventStreamClient, type WebhookReceiver } from './notification-helpers';
import { apiClient, eventually, startStack, type Stack } from './harness';

// Compile-time: what the serializers return is what the document says, with no undocumented field.
type Conforms<Actual, Documented> = [Actual] extends [Documented]
  ? [Exclude<keyof Actual, keyof Documented>] extends [never]
    ? true
    : { undocumented: Exclude<keyof Actual, keyof Documented> }
  : { notAssignable: Actual };
type Usage = { tier: string; credits: Awaited<ReturnType<typeof creditBalance>>; backends: Awaited<ReturnType<typeof usageByBackend>> } & Awaited<ReturnType<Admission['usage']>>;
const _serializersConform: [
  Conforms<ReturnType<typeof toNotificationResource>, z.infer<typeof documented.notificationResource>>,
  Conforms<ReturnType<typeof toEndpointResource>, z.infer<typeof documented.webhookEndpointResource>>,
  Conforms<ReturnType<typeof toDeliveryResource>, z.infer<typeof documented.webhookDeliveryResource>>,
  Conforms<Usage, z.infer<typeof documented.usage>>,
  Conforms<ReturnType<typeof toApiKeyResource>, z.infer<typeof documented.apiKeyResource>>,
  Conforms<ReturnType<typeof toBatchResource>, z.infer<typeof batchResource>>,
] = [true, true, true, true, true, true];
void _serializersConform;

/** Routes served on purpose without a place in the document, and why. */
const UNDOCUMENTED: Record<string, string> = {
  'POST /internal/backend/callbacks': "the generation backend's signed callbacks: the backend's contract, not the client API",
  'POST /internal/backend/callbacks/{backend}': "a provider's own signed webhooks (Replicate, fal): the provider's contract, docs/backends.md",
  'GET /': 'the status page (HTML)',
  'GET /status-page/app.js': "the status page's script",
  'GET /client/{file}': 'the TypeScript client package, built (clients/typescript), which the status page imports',
  'GET /status-page/style.css': "the status page's style sheet",
  'GET /favicon.svg': "the status page's icon",
  'GET /favicon.ico': 'the same icon, where a browser looks for one on the pages that name none',
  'GET /docs': 'this document, rendered as HTML',
  ...Object.fromEntries(
    ['/codec/decode', '/codec/encode', '/codec/{namespace}/decode', '/codec/{namespace}/encode'].flatMap((path) => [
      [`POST ${path}`, "Temporal's codec server protocol, for operators' Web UI and CLI (admin only; docs/runbook.md)"],
      [`OPTIONS ${path}`, "the Web UI's CORS preflight of the codec endpoint"],
    ]),
  ),
  'GET /codec/login': "the codec endpoint's sign-in form for the Web UI (admin key)",
  'POST /codec/login': "the codec endpoint's sign-in (admin key)",
};

interface Layer {
  rawPath?: unknown;
  route?: { path: unknown; methods: Record<string, boolean> };
  handle?: { stack?: Layer[] };
}

/** `METHOD /path` of every route Express dispatches, read from its router stacks (router 2.x keeps each mount path as rawPath). */
function mountedRoutes(app: Express): string[] {
  const found: string[] = [];
  const join = (prefix: string, path: string) => (path === '/' ? prefix : prefix + path);
  const walk = (stack: Layer[], prefix: string) => {
    for (const layer of stack) {
      if (layer.route) {
        if (typeof layer.route.path !== 'string') throw new Error(`a route under ${prefix} has a path this walk cannot read`);
        for (const method of Object.keys(layer.route.methods)) {
          if (method === '_all') throw new Error(`${prefix}${layer.route.path} answers every method: give it explicit ones`);
          found.push(`${method.toUpperCase()} ${openApiPath(join(prefix, layer.route.path) || '/')}`);
        }
      } else if (Array.isArray(layer.handle?.stack)) {
        if (typeof layer.rawPath !== 'string') throw new Error(`a router under ${prefix || '/'} is mounted at a path this walk cannot read`);
        walk(layer.handle.stack, join(prefix, layer.rawPath));
      }
    }
  };
  walk((app as unknown as { router: { stack: Layer[] } }).router.stack, '');
  return found.sort();
}

/** Validates against the official OpenAPI schemas; the validator is an ES module, which jest's runtime cannot load, so plain node runs it. */
function validateOpenApi(document: object): unknown {
  const script =
    "import { Validator } from '@seriousme/openapi-schema-validator'; let text = ''; for await (const chunk of process.stdin) text += chunk; " +
    'console.log(JSON.stringify(await new Validator().validate(JSON.parse(text))));';
  return JSON.parse(execFileSync(process.execPath, ['--input-type=module', '-e', script], { input: JSON.stringify(document), encoding: 'utf8' }));
}

type Answer = { status: number; body: unknown; headers: Headers };
const exercised = new Set<string>();

function conform(schema: z.ZodType, body: unknown, what: string): void {
  // Strict at the top level: a field the document does not name is drift too.
  const result = (schema instanceof z.ZodObject ? schema.strict() : schema).safeParse(body);
  if (!result.success) throw new Error(`${what} does not match its documented schema:\n${z.prettifyError(result.error)}\n${JSON.stringify(body)}`);
}

/** Checks an answer against what the document says `operationId` answers with its status, and counts the operation as exercised. */
function expectDocumented(operationId: string, res: Answer): void {
  const op = operations.find((o) => o.operationId === operationId);
  if (!op) throw new Error(`the document has no operation ${operationId}`);
  const success = op.responses.find((r) => r.status === res.status);
  const isDocumentedError = (op.errors ?? []).includes(res.status as ErrorStatus) || (res.status === 401 && op.auth !== 'none');
  if (!success && !isDocumentedError) throw new Error(`${operationId} answered ${res.status}, which the document does not list: ${JSON.stringify(res.body)}`);
  const schema = success ? success.schema : documented.errorResponse;
  if (schema) conform(schema, res.body, `${operationId} ${res.status}`);
  if (success?.headers?.includes('Location')) expect(res.headers.get('location')).toMatch(/^\/v1\//);
  if (success?.text) expect(res.headers.get('content-type')).toMatch(new RegExp(`^${success.text}`));
  exercised.add(operationId);
}

function expectDocumentedStream(operationId: string, stream: EventStreamClient): void {
  const op = operations.find((o) => o.operationId === operationId);
  const events = op?.responses[0].events;
  if (!events) throw new Error(`${operationId} is not documented as an event stream`);
  expect(stream.status).toBe(200);
  expect(stream.headers.get('content-type')).toMatch(/^text\/event-stream/);
  expect(stream.events.length).toBeGreaterThan(0);
  for (const event of stream.events) {
    const kind = events.find((e) => e.names.includes(event.event));
    if (!kind) throw new Error(`${operationId} sent an undocumented event ${event.event}`);
    conform(kind.data, event.data, `${operationId} event ${event.event}`);
  }
  exercised.add(operationId);
}

describe('the OpenAPI document at /openapi.json', () => {
  let stack: Stack;
  let receiver: WebhookReceiver;
  const streams: EventStreamClient[] = [];
  beforeAll(async () => {
    stack = await startStack();
    receiver = await startWebhookReceiver();
  });
  afterAll(async () => {
    for (const stream of streams) stream.close();
    await receiver?.close();
    await stack?.close();
  });

  test('names exactly the routes the app serves, apart from the listed undocumented ones', () => {
    const app = createApp({ config: stack.config, database: stack.database, client: stack.client, logger: createLogger('test', 'error'), adminApiKey: 'unused' });
    const mounted = mountedRoutes(app);
    const inDocument = Object.entries(openApiDocument().paths as Record<string, object>).flatMap(([path, item]) =>
      Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`),
    );
    expect(mounted).toEqual(expect.arrayContaining(Object.keys(UNDOCUMENTED)));
    expect(inDocument.sort()).toEqual(mounted.filter((route) => !(route in UNDOCUMENTED)));
  });

  test('with ADMIN_PORT, the admin listener serves the operations marked for it and the public port all the others', () => {
    const config = loadConfig({ ...stack.env, ADMIN_PORT: '0' });
    const deps = { config, database: stack.database, client: stack.client, logger: createLogger('test', 'error'), adminApiKey: 'unused' };
    const documented = (ops: typeof operations) => ops.map((o) => `${o.method.toUpperCase()} ${openApiPath(o.path)}`).sort();
    const publicRoutes = mountedRoutes(createApp(deps)).filter((route) => !(route in UNDOCUMENTED));
    expect(publicRoutes).toEqual(documented(operations.filter((o) => !o.adminListener)));
    const adminRoutes = mountedRoutes(createAdminApp(deps));
    expect(adminRoutes.filter((route) => !(route in UNDOCUMENTED))).toEqual(documented(operations.filter((o) => o.adminListener || ['health', 'readiness'].includes(o.operationId))));
    // The codec endpoint is an admin route: on the admin listener only, once there is one.
    expect(adminRoutes).toContain('POST /codec/decode');
    expect(publicRoutes.concat(mountedRoutes(createApp(deps))).filter((route) => route.includes('/codec'))).toEqual([]);
    expect(operations.filter((o) => o.auth === 'admin' && !o.adminListener)).toEqual([]);
  });

  test('is a valid OpenAPI 3.1 document whose every $ref resolves', () => {
    const document = openApiDocument();
    expect(validateOpenApi(document)).toEqual({ valid: true });
    expect(document.openapi).toBe('3.1.0');
    const refs = JSON.stringify(document).match(/"\$ref":"[^"]+"/g) ?? [];
    for (const ref of new Set(refs.map((r) => r.slice('"$ref":"'.length, -1)))) {
      const target = ref.slice(2).split('/').reduce<any>((node, key) => node?.[key], document);
      if (target === undefined) throw new Error(`${ref} does not resolve`);
    }
    const ids = operations.map((o) => o.operationId);
    expect(new Set(ids).size).toBe(ids.length);
  });

  test('is served as JSON, and rendered at /docs by a page that needs nothing from elsewhere', async () => {
    const api = apiClient(stack.apiUrl, 'no key needed');
    const json = await api.call('GET', '/openapi.json');
    expect(json.status).toBe(200);
    expect(json.body).toEqual(openApiDocument());
    const docs = await api.call('GET', '/docs');
    expect(docs.status).toBe(200);
    expect(docs.headers.get('content-type')).toMatch(/^text\/html/);
    for (const op of operations) expect(docs.text).toContain(`id="op-${op.operationId}"`);
    for (const name of Object.keys((openApiDocument().components as { schemas: object }).schemas)) expect(docs.text).toContain(`id="schema-${name}"`);
    expect(docs.text).not.toMatch(/<script|(?:src|href)="(?:https?:)?\/\//i);
  });

  test('every documented operation answers as documented, and refuses a request without a key when it needs one', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const admin = apiClient(stack.apiUrl, stack.adminApiKey);
    expectDocumented('health', await api.call('GET', '/healthz'));
    expectDocumented('openApiDocument', await api.call('GET', '/openapi.json'));
    expectDocumented('readiness', await api.call('GET', '/readyz'));
    expectDocumented('metrics', await api.call('GET', '/metrics'));

    const endpoint = await api.call('POST', '/v1/webhook-endpoints', { url: receiver.url, description: 'docs test' });
    expectDocumented('createWebhookEndpoint', endpoint);
    expect(endpoint.body.secret).toMatch(/^whsec_/);
    const events = await openEventStream(`${stack.apiUrl}/v1/events`, apiKey);
    streams.push(events);

    expectDocumented('estimateGeneration', await api.call('POST', '/v1/generations/estimate', { prompt: 'a kite over the dunes' }));
    expectDocumented('estimateGeneration', await api.call('POST', '/v1/generations/estimate', { prompt: 'a kite', duration_seconds: 0 }));
    const submitted = await api.submit({ prompt: 'a kite over the dunes' }, 'docs-1');
    expectDocumented('createGeneration', submitted);
    expectDocumented('createGeneration', await api.submit({ prompt: 'another body' }, 'docs-1'));
    expectDocumented('createGeneration', await api.submit({ prompt: '' }));
    const waited = await api.call('POST', '/v1/generations', { prompt: 'a kite that lands' }, { prefer: 'wait=30' });
    expectDocumented('createGeneration', waited);
    expect(waited.headers.get('preference-applied')).toBe('wait=30');
    expectDocumented('getGeneration', await api.call('GET', `/v1/generations/${waited.body.id}`, undefined, { prefer: 'wait=5' }));
    const id: string = submitted.body.id;
    expectDocumented('getGeneration', await api.get(id));
    expectDocumented('getGeneration', await api.get('gen_unknown'));
    expectDocumented('retryGeneration', await api.call('POST', `/v1/generations/${id}/retry`, undefined, { 'idempotency-key': 'docs-rerun-1' }));
    expectDocumented('retryGeneration', await api.call('POST', `/v1/generations/${id}/retry`, undefined, { 'idempotency-key': 'docs-1' }));
    expectDocumented('retryGeneration', await api.call('POST', '/v1/generations/gen_unknown/retry'));
    const batch = await api.call('POST', '/v1/batches', { items: [{ prompt: 'a batch of one' }] }, { 'idempotency-key': 'docs-batch-1' });
    expectDocumented('createBatch', batch);
    expectDocumented('createBatch', await api.call('POST', '/v1/batches', { items: [{ prompt: 'a batch of one' }] }, { 'idempotency-key': 'docs-batch-1' }));
    expectDocumented('createBatch', await api.call('POST', '/v1/batches', { items: [{ prompt: '' }] }));
    expectDocumented('getBatch', await api.call('GET', `/v1/batches/${batch.body.id}`));
    expectDocumented('getBatch', await api.call('GET', '/v1/batches/batch_unknown'));
    expectDocumented('listBatches', await api.call('GET', '/v1/batches?limit=1'));
    expectDocumented('listBatches', await api.call('GET', '/v1/batches?limit=0'));
    expectDocumented('listGenerations', await api.list(`?batch_id=${batch.body.id}`));
    expectDocumented('cancelBatch', await api.call('POST', `/v1/batches/${batch.body.id}/cancel`));
    expectDocumented('listGenerations', await api.list('?limit=1'));
    expectDocumented('listGenerations', await api.list('?limit=0'));
    const jobEvents = await openEventStream(`${stack.apiUrl}/v1/generations/${id}/events`, apiKey);
    streams.push(jobEvents);

    await api.waitForTerminal(id);
    expectDocumented('cancelGeneration', await api.call('POST', `/v1/generations/${id}/cancel`));
    const hanging = await api.submit({ prompt: 'a clock that never stops [hang]' });
    expectDocumented('cancelGeneration', await api.call('POST', `/v1/generations/${hanging.body.id}/cancel`));
    const ended = (all: { event: string; data: any }[]) => all.some((e) => e.event === 'generation.succeeded' && e.data.generation_id === id);
    await events.waitFor(ended);
    await jobEvents.waitFor(ended);
    expectDocumentedStream('streamEvents', events);
    expectDocumentedStream('streamGenerationEvents', jobEvents);

    const inbox = await eventually(async () => {
      const res = await api.call('GET', '/v1/notifications');
      return res.body.data.length > 0 ? res : undefined;
    });
    expectDocumented('listNotifications', inbox);
    expectDocumented('markNotificationRead', await api.call('POST', `/v1/notifications/${inbox.body.data[0].id}/read`));
    expectDocumented('getUsage', await api.call('GET', '/v1/usage'));

    // Email notifications: the settings, and the two links their mails carry (a bad token here; test/email-notifications.test.ts follows real ones).
    expectDocumented('getNotificationSettings', await api.call('GET', '/v1/notification-settings'));
    expectDocumented('putNotificationSettings', await api.call('PUT', '/v1/notification-settings', { email: `docs-${Date.now()}@mail.test`, on: ['failed'], digest_seconds: 60 }));
    expectDocumented('putNotificationSettings', await api.call('PUT', '/v1/notification-settings', { email: 'nope', digest_seconds: 99999 }));
    expectDocumented('verifyNotificationEmail', await api.call('GET', '/v1/notification-settings/verify?token=an-unknown-token-of-some-length'));
    expectDocumented('verifyNotificationEmail', await api.call('GET', '/v1/notification-settings/verify'));
    const [settingsRow] = await stack.database.sql<{ token: string }[]>`select unsubscribe_token as token from notification_settings order by updated_at desc limit 1`;
    expectDocumented('unsubscribeNotificationEmail', await api.call('GET', `/v1/notification-settings/unsubscribe?token=${settingsRow.token}`));
    expectDocumented('unsubscribeNotificationEmailOneClick', await api.call('POST', `/v1/notification-settings/unsubscribe?token=${settingsRow.token}`));
    expectDocumented('unsubscribeNotificationEmail', await api.call('GET', '/v1/notification-settings/unsubscribe?token=an-unknown-token-of-some-length'));

    const endpointPath = `/v1/webhook-endpoints/${endpoint.body.id}`;
    expectDocumented('listWebhookEndpoints', await api.call('GET', '/v1/webhook-endpoints'));
    expectDocumented('getWebhookEndpoint', await api.call('GET', endpointPath));
    const deliveries = await eventually(async () => {
      const res = await api.call('GET', `${endpointPath}/deliveries`);
      return res.body.data.some((d: { status: string }) => d.status === 'succeeded') ? res : undefined;
    });
    expectDocumented('listWebhookDeliveries', deliveries);
    expectDocumented('replayWebhookDelivery', await api.call('POST', `${endpointPath}/deliveries/${deliveries.body.data[0].id}/replay`));
    expectDocumented('rotateWebhookEndpointSecret', await api.call('POST', `${endpointPath}/rotate-secret`, {}));
    expectDocumented('enableWebhookEndpoint', await api.call('POST', `${endpointPath}/enable`));
    expectDocumented('getRequestWebhookSecret', await api.call('GET', '/v1/webhook-secret'));
    expectDocumented('deleteWebhookEndpoint', await api.call('DELETE', endpointPath));

    expectDocumented('createUser', await admin.call('POST', '/admin/users', { name: 'documented', tier: 'free' }));
    expectDocumented('listStuckGenerations', await admin.call('GET', '/admin/generations/stuck'));
    expectDocumented('getGpuCapacity', await admin.call('GET', '/admin/capacity'));
    expectDocumented('setGpuCapacity', await admin.call('PUT', '/admin/capacity', { capacity: null }));

    const keyHolder = await stack.createUser('free');
    expectDocumented('listApiKeys', await apiClient(stack.apiUrl, keyHolder.apiKey).call('GET', '/v1/api-keys'));
    expectDocumented('rotateApiKey', await apiClient(stack.apiUrl, keyHolder.apiKey).call('POST', '/v1/api-keys/rotate', { grace_seconds: 60 }));
    expectDocumented('rotateApiKey', await apiClient(stack.apiUrl, keyHolder.apiKey).call('POST', '/v1/api-keys/rotate', {}));
    expectDocumented('rotateApiKey', await apiClient(stack.apiUrl, keyHolder.apiKey).call('POST', '/v1/api-keys/rotate', { grace_seconds: 'soon' }));
    const keysPath = `/admin/users/${keyHolder.userId}/api-keys`;
    const listed = await admin.call('GET', keysPath);
    expectDocumented('listUserApiKeys', listed);
    expectDocumented('listUserApiKeys', await admin.call('GET', '/admin/users/usr_nobody/api-keys'));
    expectDocumented('issueUserApiKey', await admin.call('POST', keysPath));
    expectDocumented('revokeUserApiKey', await admin.call('POST', `${keysPath}/${listed.body.data[0].id}/revoke`));
    expectDocumented('revokeUserApiKey', await admin.call('POST', `${keysPath}/key_nothing/revoke`));
    expectDocumented('revokeUserApiKeys', await admin.call('POST', `${keysPath}/revoke`));

    const anonymous = apiClient(stack.apiUrl, 'vg_not-a-key');
    for (const op of operations.filter((o) => o.auth !== 'none')) {
      const res = await anonymous.call(op.method.toUpperCase(), op.path.replace(/:(\w+)/g, 'x'), op.body ? {} : undefined);
      expect({ operation: op.operationId, status: res.status }).toEqual({ operation: op.operationId, status: 401 });
      conform(documented.errorResponse, res.body, `${op.operationId} 401`);
    }
    expect([...exercised].sort()).toEqual(operations.map((o) => o.operationId).sort());
  });
});
