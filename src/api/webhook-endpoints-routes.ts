import type { Client } from '@temporalio/client';
import { Router, type RequestHandler } from 'express';
import { z } from 'zod';
import type { Config } from '../config';
import type { Db } from '../db/client';
import { claimReplay, getDelivery, listEndpointDeliveries, releaseReplay, toDeliveryResource } from '../notifications/delivery-store';
import { startReplay, type DeliveryStarter } from '../notifications/delivery-starter';
import type { AllowedHosts } from '../lib/ip-addresses';
import { assertDestinationAllowed, boundedLookup, RefusedDestinationError, type LookupAll } from '../notifications/destination-guard';
import {
  createEndpointWithinLimit,
  deleteEndpoint,
  getEndpoint,
  listEndpoints,
  requestSecretFor,
  rotateEndpointSecret,
  setEndpointEnabled,
  toEndpointResource,
} from '../notifications/endpoint-store';
import { retryScheduleMs, WEBHOOK_EVENT_TYPES } from '../notifications/events';
import { currentUser, requireUser } from './auth';
import { clientRefusals } from '../lib/metrics';
import { ApiError, notFound } from '../wire/errors';
import { TokenBuckets } from './token-buckets';
import { decodeCursor, encodeCursor } from '../wire/serialize';
import { parseOr400 } from './validation';

const MAX_ENDPOINTS_PER_USER = 20;
const DAY_SECONDS = 86_400;

export const createEndpointBody = z
  .object({
    url: z.string().url().max(2000),
    events: z.array(z.enum(WEBHOOK_EVENT_TYPES)).max(WEBHOOK_EVENT_TYPES.length).default([]),
    description: z.string().max(500).default(''),
  })
  .strict();

export const rotateSecretBody = z.object({ overlap_seconds: z.number().int().min(0).max(7 * DAY_SECONDS).default(DAY_SECONDS) }).strict();

export const deliveriesQuery = z.object({ limit: z.coerce.number().int().min(1).max(100).default(20), cursor: z.string().max(200).optional() }).strict();

/** One bounded DNS lookup per configuration: the API's checks of webhook URLs share its time limit and in-flight cap. */
const lookups = new WeakMap<Config, LookupAll>();
export function webhookLookup(config: Config): LookupAll {
  let lookup = lookups.get(config);
  if (!lookup) lookups.set(config, (lookup = boundedLookup({ timeoutMs: config.notifications.dnsTimeoutMs })));
  return lookup;
}

/** Refuses a webhook URL that is not http(s) or whose host is private, loopback or link-local (unless allow-listed). */
export async function assertWebhookUrlAllowed(field: string, url: string, allowed: AllowedHosts, lookup?: LookupAll): Promise<void> {
  try {
    await assertDestinationAllowed(url, allowed, lookup);
  } catch (err) {
    if (err instanceof RefusedDestinationError) throw new ApiError(400, 'invalid_webhook_url', `${field}: ${err.message}`);
    throw err;
  }
}

/** Guards `webhook_url` on POST /v1/generations; mounted before the generations router, after requireUser. */
export function requestWebhookUrlGuard(config: Config): RequestHandler {
  return async (req, _res, next) => {
    // A submit's body, and an estimate's (which answers what the submit would).
    const url: unknown = req.method === 'POST' && (req.path === '/' || req.path === '/estimate') ? req.body?.webhook_url : undefined;
    // Anything not a URL is left to the request schema, which names the problem.
    if (typeof url === 'string' && URL.canParse(url)) await assertWebhookUrlAllowed('webhook_url', url, config.notifications.webhookAllowedHosts, webhookLookup(config));
    next();
  };
}

/**
 * Mounted at /v1: `/webhook-endpoints` (create, list, read, delete, rotate the secret, re-enable, delivery log, replay)
 * and `/webhook-secret` (the secret that signs deliveries to a per-request webhook_url).
 */
export function webhookEndpointsRouter({ db, client, config }: { db: Db; client: Client; config: Config }): Router {
  const router = Router();
  const { webhookAllowedHosts, webhookRetryScale, webhookTimeoutMs } = config.notifications;
  const starter: DeliveryStarter = {
    client,
    taskQueue: config.worker.generationTaskQueue,
    scheduleMs: retryScheduleMs(webhookRetryScale),
    timeoutMs: webhookTimeoutMs,
  };
  router.use(['/webhook-endpoints', '/webhook-secret'], requireUser(db));
  const { webhookMaxReplays, webhookReplaysPerMinute } = config.notifications;
  // Each replay is a workflow and a request to someone's server: a user's replays are paced, in this process.
  const replays = new TokenBuckets({ burst: webhookReplaysPerMinute, perSecond: webhookReplaysPerMinute / 60 });

  const ownEndpoint = async (userId: string, id: unknown) => {
    const endpoint = await getEndpoint(db, userId, String(id));
    if (!endpoint) throw notFound('webhook endpoint');
    return endpoint;
  };

  router.post('/webhook-endpoints', async (req, res) => {
    const user = currentUser(req);
    const body = parseOr400(createEndpointBody, req.body ?? {});
    await assertWebhookUrlAllowed('url', body.url, webhookAllowedHosts, webhookLookup(config));
    const endpoint = await createEndpointWithinLimit(
      db,
      { userId: user.id, url: body.url, description: body.description, eventTypes: body.events },
      MAX_ENDPOINTS_PER_USER,
    );
    if (!endpoint) throw new ApiError(409, 'too_many_endpoints', `at most ${MAX_ENDPOINTS_PER_USER} webhook endpoints per user`);
    res.status(201).location(`/v1/webhook-endpoints/${endpoint.id}`).json(toEndpointResource(endpoint, { withSecret: true }));
  });

  router.get('/webhook-endpoints', async (req, res) => {
    const rows = await listEndpoints(db, currentUser(req).id);
    res.json({ data: rows.map((row) => toEndpointResource(row)) });
  });

  router.get('/webhook-endpoints/:id', async (req, res) => {
    res.json(toEndpointResource(await ownEndpoint(currentUser(req).id, req.params.id)));
  });

  router.delete('/webhook-endpoints/:id', async (req, res) => {
    if (!(await deleteEndpoint(db, currentUser(req).id, String(req.params.id)))) throw notFound('webhook endpoint');
    res.json({ id: req.params.id, object: 'webhook_endpoint', deleted: true });
  });

  router.post('/webhook-endpoints/:id/rotate-secret', async (req, res) => {
    const body = parseOr400(rotateSecretBody, req.body ?? {});
    const endpoint = await rotateEndpointSecret(db, currentUser(req).id, String(req.params.id), body.overlap_seconds * 1000);
    if (!endpoint) throw notFound('webhook endpoint');
    res.json(toEndpointResource(endpoint, { withSecret: true }));
  });

  router.post('/webhook-endpoints/:id/enable', async (req, res) => {
    const endpoint = await setEndpointEnabled(db, currentUser(req).id, String(req.params.id));
    if (!endpoint) throw notFound('webhook endpoint');
    res.json(toEndpointResource(endpoint));
  });

  router.get('/webhook-endpoints/:id/deliveries', async (req, res) => {
    const endpoint = await ownEndpoint(currentUser(req).id, req.params.id);
    const query = parseOr400(deliveriesQuery, req.query);
    const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
    if (after === null) throw new ApiError(400, 'invalid_cursor', 'cursor: not a cursor this API returned');
    const { deliveries, hasMore, next } = await listEndpointDeliveries(db, endpoint.id, { limit: query.limit, after });
    res.json({
      data: deliveries.map(({ delivery, attempts }) => toDeliveryResource(delivery, attempts)),
      next_cursor: next ? encodeCursor(next) : null,
      has_more: hasMore,
    });
  });

  router.post('/webhook-endpoints/:id/deliveries/:deliveryId/replay', async (req, res) => {
    const user = currentUser(req);
    // Before anything is read: a flood of replays costs no query.
    if (!replays.take(user.id)) {
      clientRefusals.inc({ code: 'replay_rate_limited' });
      const retryAfter = Math.max(1, Math.ceil(replays.waitSeconds(user.id)));
      throw new ApiError(429, 'replay_rate_limited', `at most ${webhookReplaysPerMinute} replays a minute`, { retry_after_seconds: retryAfter }, {
        'Retry-After': String(retryAfter),
      });
    }
    const endpoint = await ownEndpoint(user.id, req.params.id);
    const delivery = await getDelivery(db, String(req.params.deliveryId));
    if (!delivery || delivery.endpointId !== endpoint.id) throw notFound('webhook delivery');
    if (endpoint.disabledAt) throw new ApiError(409, 'endpoint_disabled', 'the endpoint is disabled; enable it before replaying');
    const claimed = await claimReplay(db, delivery.id, webhookMaxReplays);
    if (!claimed && delivery.replays >= webhookMaxReplays) {
      throw new ApiError(409, 'replay_limit_reached', `a delivery may be replayed ${webhookMaxReplays} times`, { limit: webhookMaxReplays });
    }
    if (!claimed) throw new ApiError(409, 'delivery_in_progress', 'the delivery is still being attempted');
    try {
      await startReplay(starter, claimed.id, claimed.replays, claimed.attempts + 1);
    } catch {
      await releaseReplay(db, claimed, delivery.status);
      throw new ApiError(503, 'temporal_unavailable', 'the replay could not be started; retry shortly', undefined, { 'Retry-After': '5' });
    }
    res.status(202).json(toDeliveryResource(claimed, []));
  });

  router.get('/webhook-secret', async (req, res) => {
    res.json({ object: 'webhook_secret', secret: await requestSecretFor(db, currentUser(req).id) });
  });

  return router;
}
