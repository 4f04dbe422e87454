import { Router } from 'express';
import type { Db } from '../db/client';
import { getGeneration } from '../db/projection';
import type { GenerationEventHub } from '../notifications/event-hub';
import { streamGenerationEvents, type EventStreamOptions } from '../notifications/sse';
import { currentUser, requireUser } from './auth';
import { notFound } from './errors';

/**
 * Server-Sent Events, mounted at /v1: `GET /events` (all of the user's jobs) and `GET /generations/:id/events` (one job,
 * from its first event unless resumed). Both resume after Last-Event-ID; queued jobs' positions are polled and sent as
 * `generation.queue_position` events, which carry no id.
 */
export function eventsRouter({ db, hub, keepAliveMs, queue }: { db: Db; hub: GenerationEventHub; keepAliveMs: number; queue?: EventStreamOptions['queue'] }): Router {
  const router = Router();

  router.get('/events', requireUser(db), async (req, res) => {
    const user = currentUser(req);
    await streamGenerationEvents(req, res, { hub, userId: user.id, keepAliveMs, queue });
  });

  router.get('/generations/:id/events', requireUser(db), async (req, res) => {
    const user = currentUser(req);
    const generation = await getGeneration(db, user.id, String(req.params.id));
    if (!generation) throw notFound('generation');
    await streamGenerationEvents(req, res, { hub, userId: user.id, jobId: generation.id, keepAliveMs, queue });
  });

  return router;
}
