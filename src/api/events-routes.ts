import { Router, type Response } from 'express';
import type { Config } from '../config';
import type { Db, Sql } from '../db/client';
import { getGeneration } from '../db/projection';
import type { Logger } from '../lib/logger';
import { GenerationEventHub } from '../notifications/event-hub';
import { RevokedKeyWatch } from '../notifications/key-revocations';
import { QueuePositionPoller, type QueuePositionsOf } from '../notifications/queue-watch';
import { streamGenerationEvents, type EventStreams } from '../notifications/sse';
import { StreamSlots } from '../notifications/stream-slots';
import { currentUser, requireUser } from './auth';
import { notFound } from '../wire/errors';

/**
 * Server-Sent Events, mounted at /v1: `GET /events` (all of the user's jobs) and `GET /generations/:id/events` (one job,
 * from its first event unless resumed). Both resume after Last-Event-ID within the resume window (further back, a
 * `stream.resync_required` event tells the client to re-list); queued jobs' positions are polled once per user and sent
 * as `generation.queue_position` events, which carry no id. Streams are capped per user and per process (429).
 */
export function eventsRouter({
  db,
  sql,
  logger,
  config,
  positionsOf,
  hub,
}: {
  db: Db;
  sql: Sql;
  logger: Logger;
  config: Config;
  positionsOf?: QueuePositionsOf;
  /** The process's change-feed reader, shared with the waits of Prefer: wait (one poll for both); made here when not given. */
  hub?: GenerationEventHub;
}): Router {
  const router = Router();
  const n = config.notifications;
  const slots = new StreamSlots({ perUser: n.sseMaxStreamsPerUser, total: n.sseMaxStreams });
  const streams: EventStreams = {
    hub: hub ?? eventHub(sql, logger, config),
    revocations: new RevokedKeyWatch(sql, logger, n.sseKeyCheckMs),
    queue: positionsOf ? new QueuePositionPoller(positionsOf, n.sseQueuePositionMs) : undefined,
    keepAliveMs: n.sseKeepAliveMs,
    slowClientMs: n.sseSlowClientMs,
  };
  /** The stream's slot, taken before anything is read for it and freed when its response closes, however it ends. */
  const takeSlot = (userId: string, res: Response) => res.once('close', slots.take(userId));

  router.get('/events', requireUser(db), async (req, res) => {
    const user = currentUser(req);
    takeSlot(user.id, res);
    await streamGenerationEvents(req, res, streams, { userId: user.id, apiKeyId: req.apiKeyId!, jobId: undefined });
  });

  router.get('/generations/:id/events', requireUser(db), async (req, res) => {
    const user = currentUser(req);
    takeSlot(user.id, res);
    const generation = await getGeneration(db, user.id, String(req.params.id));
    if (!generation) throw notFound('generation');
    await streamGenerationEvents(req, res, streams, { userId: user.id, apiKeyId: req.apiKeyId!, jobId: generation.id });
  });

  return router;
}

/** The change-feed reader of an API process, as the settings make it. */
export function eventHub(sql: Sql, logger: Logger, config: Config): GenerationEventHub {
  const n = config.notifications;
  return new GenerationEventHub(sql, logger, n.ssePollMs, { maxEvents: n.sseResumeMaxEvents, maxAgeMs: n.sseResumeMaxAgeMs });
}
