import { Router } from 'express';
import { getGeneration, listGenerations } from '../db/projection';
import type { GenerationRequest } from '../domain/generation';
import { currentUser } from './auth';
import { ApiError, notFound } from './errors';
import { createGenerationBody, idempotencyKeyHeader, listGenerationsQuery } from './generation-schemas';
import { decodeCursor, encodeCursor, toGenerationResource } from './serialize';
import { submitGeneration, type SubmitDeps } from './submit';
import { parseOr400 } from './validation';

/** /v1/generations: submit, read one, list mine. Mounted behind requireUser. */
export function generationsRouter(deps: SubmitDeps): Router {
  const router = Router();

  router.post('/', async (req, res) => {
    const user = currentUser(req);
    const key = req.get('idempotency-key');
    const idempotencyKey = key === undefined ? undefined : parseOr400(idempotencyKeyHeader, key, 'invalid_idempotency_key');
    const body = parseOr400(createGenerationBody, req.body ?? {});
    const request: GenerationRequest = { ...body, metadata: Object.fromEntries(Object.entries(body.metadata).sort()) };
    const { generation, replayed } = await submitGeneration(deps, user, request, idempotencyKey);
    if (replayed) res.set('Idempotent-Replayed', 'true');
    res.status(202).location(`/v1/generations/${generation.id}`).json(toGenerationResource(generation));
  });

  router.get('/', async (req, res) => {
    const user = currentUser(req);
    const query = parseOr400(listGenerationsQuery, req.query);
    const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
    if (after === null) throw new ApiError(400, 'invalid_cursor', 'cursor: not a cursor this API returned');
    const { rows, hasMore } = await listGenerations(deps.db, user.id, {
      status: query.status,
      createdAfter: query.created_after ? new Date(query.created_after) : undefined,
      createdBefore: query.created_before ? new Date(query.created_before) : undefined,
      limit: query.limit,
      after,
    });
    res.json({
      data: rows.map(toGenerationResource),
      has_more: hasMore,
      next_cursor: hasMore ? encodeCursor(rows[rows.length - 1]) : null,
    });
  });

  router.get('/:id', async (req, res) => {
    const generation = await getGeneration(deps.db, currentUser(req).id, req.params.id);
    if (!generation) throw notFound('generation');
    res.json(toGenerationResource(generation));
  });

  return router;
}
