import express, { type Express } from 'express';
import { opsRouter } from './ops-routes';
import { requestLog } from './request-log';
import { requestTracing, tracingOn } from '../lib/tracing';
import { limitFailedAuthentication, requireUser } from './auth';
import { createBackends } from '../backend/registry';
import { callbacksRouter } from './callbacks-routes';
import { errorMiddleware } from './errors';
import { ApiError } from '../wire/errors';
import { generationsRouter } from './generations-routes';
import { usageRouter } from './usage-routes';
import { createAdmission, type Admission } from './admission';
import { createQueuePositions } from './queue-position';
import { eventHub, eventsRouter } from './events-routes';
import { WaitSlots } from './prefer-wait';
import { notificationsRouter } from './notifications-routes';
import { notificationSettingsRouter } from './notification-settings-routes';
import { requestWebhookUrlGuard, webhookEndpointsRouter } from './webhook-endpoints-routes';
import { apiDocsRouter } from './docs-page';
import { statusPageRouter } from './status-page/router';
import { useLeanJson } from './json-response';
import { apiKeysRouter } from './api-keys-routes';
import { mountAdminRoutes, type AdminAppDeps } from './admin-app';
import { mountCodecRoutes } from './codec-routes';
import { createServiceStartRelay, type StartRelay } from './start-relay';
import { batchesRouter } from './batches-routes';
import { createInputChecks } from './generation-inputs';

export interface ApiDeps extends AdminAppDeps {
  /** The start relay of submits kept while Temporal cannot be reached (startApi passes its own, to close it). */
  relay?: StartRelay;
}

export function createApp(deps: ApiDeps): Express {
  return createPublicApi(deps).app;
}

/** The public app, and its admission, whose refusals of a flood's submits are answered before the app (src/api/early-refusals.ts). */
export function createPublicApi({ config, database, client, logger, adminApiKey, relay: given }: ApiDeps): { app: Express; admission: Admission } {
  const { db, sql } = database;
  const relay = given ?? createServiceStartRelay({ client, config, sql, logger });
  const queue = createQueuePositions({ sql, config });
  const admission = createAdmission({ sql, config, queue });
  // One change-feed reader per process, for event streams and for waits (Prefer: wait) alike.
  const hub = eventHub(sql, logger, config);
  const waits = new WaitSlots({ perUser: config.notifications.preferWaitMaxPerUser, total: config.notifications.preferWaitMax });
  // input_reference images and remix_of jobs, checked before admission (submits, estimates, reruns, batch items).
  const inputs = createInputChecks({ db, config });
  const app = express();
  app.disable('x-powered-by');
  // A client's address (req.ip) is the socket's unless TRUST_PROXY names the proxies in front.
  if (config.api.trustProxy !== undefined) app.set('trust proxy', trustProxySetting(config.api.trustProxy));
  limitFailedAuthentication(db, { burst: config.api.authFailureBurst, perSecond: config.api.authFailuresPerSecond });
  app.set('query parser', 'simple');
  // No ETag on JSON answers: hashing every status body cost more CPU than the list query itself, and job status changes
  // too often for a 304 to save anything (static files keep theirs).
  app.set('etag', false);
  // Every JSON answer written as the string it is (src/api/json-response.ts): about 5% of a status read's CPU.
  useLeanJson(app);

  // A span per request when tracing is on (src/lib/tracing.ts); first, so the request log line carries its trace id.
  if (tracingOn()) app.use(requestTracing());
  app.use(requestLog(logger));
  // No id holds a NUL (Postgres text cannot), so a path with one names nothing; refused before it reaches a query.
  app.use((req, _res, next) => next(/%00/i.test(req.path) ? new ApiError(404, 'not_found', `no resource at ${req.method} ${req.path}`) : undefined));

  // Raw body for signature verification: mounted before the JSON parser.
  const backends = createBackends(config.backend.backends, { publicUrl: config.api.publicUrl, timeoutMs: config.backend.timeoutMs });
  const failedSignatures = { burst: config.api.authFailureBurst, perSecond: config.api.authFailuresPerSecond };
  app.use('/internal/backend/callbacks', callbacksRouter({ client, sql, webhookSecrets: config.backend.webhookSecrets, logger, backends, failedSignatures }));
  // The codec endpoint (admin only, like the other admin routes) parses bodies of its own size.
  if (config.api.adminListener === undefined) mountCodecRoutes(app, { config, adminApiKey });
  // Batches parse their larger bodies themselves, once the key was checked (src/api/batches-routes.ts).
  app.use('/v1/batches', requireUser(db), batchesRouter({ db, sql, client, config, relay, queue, logger, inputs }));
  app.use(express.json({ limit: '64kb' }));

  // The hottest routes first: every request walks the layers in order, and a status read should not walk the others'.
  // A stream of one job (/v1/generations/:id/events) matches none of these routes and goes on to the events router.
  app.use('/v1/generations', requireUser(db), requestWebhookUrlGuard(config), generationsRouter({ db, sql, client, config, relay, admission, queue, hub, waits, inputs }));
  app.use('/v1', eventsRouter({ db, sql, logger, config, positionsOf: (userId) => queue.positions(userId), hub }));
  app.use('/v1/usage', requireUser(db), usageRouter({ db, admission }));
  app.use('/v1/notifications', requireUser(db), notificationsRouter({ db }));
  // Its own key check: the links in the mails (verify, unsubscribe) work without a key.
  app.use('/v1/notification-settings', notificationSettingsRouter({ db, sql, config, logger }));
  app.use('/v1', webhookEndpointsRouter({ db, client, config }));
  app.use('/v1/api-keys', apiKeysRouter({ db }));
  // With an admin listener (ADMIN_PORT), admin routes, /metrics and readiness details are served there only (admin-app.ts).
  const internal = config.api.adminListener === undefined;
  if (internal) mountAdminRoutes(app, { db, sql, client, config, adminApiKey });

  app.use(opsRouter({ database, client, config, internal }));
  // /openapi.json, /docs and the status page at /: public, no key needed to load them.
  app.use(apiDocsRouter());
  app.use(statusPageRouter());

  app.use((req, _res, next) => next(new ApiError(404, 'not_found', `no route for ${req.method} ${req.path}`)));
  app.use(errorMiddleware(logger));
  return { app, admission };
}

/** TRUST_PROXY as Express takes it: `true`/`false`, a hop count, or addresses and names such as `loopback`. */
function trustProxySetting(value: string): boolean | number | string {
  if (value === 'true' || value === 'false') return value === 'true';
  return /^\d+$/.test(value) ? Number(value) : value;
}
