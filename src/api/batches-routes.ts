import express, { Router } from 'express';
import { getBatch, listBatches } from '../db/batches';
import { refusals, submissions } from '../lib/metrics';
import { createBatchBody, listBatchesQuery, toBatchResource } from '../wire/batches';
import { ApiError, notFound } from '../wire/errors';
import { idempotencyKeyHeader } from '../wire/requests';
import { decodeCursor, encodeCursor } from '../wire/serialize';
import { currentUser } from './auth';
import { BatchStarts, cancelBatch, describeBatchRequest, submitBatch, type BatchDeps } from './batch-submit';
import { parseOr400 } from './validation';

/**
 * A batch's body may hold 500 submit bodies: it has a JSON limit of its own, parsed after the key was checked (the app's
 * 64 kB parser skips a body parsed already).
 */
export const BATCH_BODY_LIMIT = '4mb';

/** /v1/batches: submit a batch, read one, list mine, cancel one. Mounted behind requireUser, before the app's JSON parser. */
export function batchesRouter(given: Omit<BatchDeps, 'starts'>): Router {
  const deps: BatchDeps = { ...given, starts: new BatchStarts(given) };
  const router = Router();
  router.use(express.json({ limit: BATCH_BODY_LIMIT }));

  router.post('/', async (req, res) => {
    const user = currentUser(req);
    let submitted;
    try {
      const key = req.get('idempotency-key');
      const idempotencyKey = key === undefined ? undefined : parseOr400(idempotencyKeyHeader, key, 'invalid_idempotency_key');
      const { items } = parseOr400(createBatchBody, req.body ?? {});
      submitted = await submitBatch(deps, await describeBatchRequest(deps, user, items, idempotencyKey));
    } catch (err) {
      refusals.inc({ tier: user.tier, reason: err instanceof ApiError ? err.code : 'internal_error' });
      throw err;
    }
    const { batch, replayed, headers } = submitted;
    submissions.inc({ tier: user.tier, outcome: replayed ? 'replayed' : 'accepted' }, replayed ? 1 : batch.total);
    res.set(headers);
    if (replayed) res.set('Idempotent-Replayed', 'true');
    res.status(202).location(`/v1/batches/${batch.id}`).json(toBatchResource(batch));
  });

  router.get('/', async (req, res) => {
    const user = currentUser(req);
    const query = parseOr400(listBatchesQuery, req.query);
    const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
    if (after === null) throw new ApiError(400, 'invalid_cursor', 'cursor: not a cursor this API returned');
    const { rows, hasMore, next } = await listBatches(deps.db, user.id, { limit: query.limit, after });
    res.json({ data: rows.map(toBatchResource), has_more: hasMore, next_cursor: next ? encodeCursor(next) : null });
  });

  router.get('/:id', async (req, res) => {
    const batch = await getBatch(deps.db, currentUser(req).id, req.params.id);
    if (!batch) throw notFound('batch');
    res.json(toBatchResource(batch));
  });

  router.post('/:id/cancel', async (req, res) => {
    const batch = await cancelBatch(deps, currentUser(req), req.params.id);
    res.status(batch.completedAt === null ? 202 : 200).json(toBatchResource(batch));
  });

  return router;
}
