import { Router } from 'express';
import { z } from 'zod';
import type { Db } from '../db/client';
import { listNotifications, markNotificationRead, toNotificationResource } from '../notifications/inbox';
import { currentUser } from './auth';
import { ApiError, notFound } from '../wire/errors';
import { decodeCursor, encodeCursor } from '../wire/serialize';
import { parseOr400 } from './validation';

export const listNotificationsQuery = z
  .object({
    unread: z.enum(['true', 'false']).optional(),
    limit: z.coerce.number().int().min(1).max(100).default(20),
    cursor: z.string().max(200).optional(),
  })
  .strict();

/** /v1/notifications: the in-app inbox, newest first, and marking one read. Mounted behind requireUser. */
export function notificationsRouter({ db }: { db: Db }): Router {
  const router = Router();

  router.get('/', async (req, res) => {
    const user = currentUser(req);
    const query = parseOr400(listNotificationsQuery, req.query);
    const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
    if (after === null) throw new ApiError(400, 'invalid_cursor', 'cursor: not a cursor this API returned');
    const { rows, hasMore, next } = await listNotifications(db, user.id, { unreadOnly: query.unread === 'true', limit: query.limit, after });
    res.json({
      data: rows.map(toNotificationResource),
      next_cursor: next ? encodeCursor(next) : null,
      has_more: hasMore,
    });
  });

  router.post('/:id/read', async (req, res) => {
    const user = currentUser(req);
    const row = await markNotificationRead(db, user.id, String(req.params.id).slice(0, 100));
    if (!row) throw notFound('notification');
    res.json(toNotificationResource(row));
  });

  return router;
}
