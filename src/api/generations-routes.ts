import { Router, type Request, type Response } from 'express';
import { getGeneration, listGenerations, type ListedGeneration } from '../db/projection';
import type { Sql } from '../db/client';
import type { GenerationRow, UserRow } from '../db/schema';
import { requestFromRow } from '../contracts/generation-start';
import type { GenerationRequest } from '../domain/generation';
import { refusals, submissions } from '../lib/metrics';
import type { Admission } from './admission';
import { currentUser } from './auth';
import { cancelGeneration } from './cancel';
import { ApiError, notFound } from '../wire/errors';
import { createGenerationBody, idempotencyKeyHeader, listGenerationsQuery } from '../wire/requests';
import { decodeCursor, encodeCursor, toGenerationResource } from '../wire/serialize';
import type { QueuePositions } from './queue-position';
import { describeSubmission, type SubmitDeps } from './submit';
import { parseOr400 } from './validation';

/** /v1/generations: submit, read one, list mine. Mounted behind requireUser. */
export function generationsRouter(deps: SubmitDeps & { sql: Sql; admission: Admission; queue: QueuePositions }): Router {
  const router = Router();

  /** Resources, with queue position and ETA for the queued ones (looked up only when one is queued). */
  async function resources(userId: string, rows: Array<GenerationRow | ListedGeneration>) {
    const queued = rows.filter((row) => row.status === 'queued');
    const positions = queued.length === 0 ? undefined : await deps.queue.positions(userId, queued.length === 1 ? queued[0] : undefined);
    return rows.map((row) => toGenerationResource(row, positions?.get(row.id)));
  }

  /**
   * A submit, or a rerun of an earlier job (`retryOf`): the same admission, answer and headers. `requestOf` reads the
   * request (the body, or the earlier job's row) inside the refusal count, so a bad body or an unknown job counts as one.
   */
  async function submit(req: Request, res: Response, requestOf: (user: UserRow) => Promise<{ request: GenerationRequest; retryOf?: string }>) {
    const user = currentUser(req);
    const key = req.get('idempotency-key');
    const idempotencyKey = key === undefined ? undefined : parseOr400(idempotencyKeyHeader, key, 'invalid_idempotency_key');
    let submitted;
    try {
      const { request, retryOf } = await requestOf(user);
      // Admission (rate, active jobs, daily quota, tier backlog) runs first; a replay is neither refused nor counted.
      submitted = await deps.admission.admit(describeSubmission(user, request, idempotencyKey, retryOf), deps);
    } catch (err) {
      refusals.inc({ tier: user.tier, reason: err instanceof ApiError ? err.code : 'internal_error' });
      throw err;
    }
    const { result, headers, queue } = submitted;
    const { generation, replayed } = result;
    submissions.inc({ tier: user.tier, outcome: replayed ? 'replayed' : 'accepted' });
    res.set(headers);
    if (replayed) res.set('Idempotent-Replayed', 'true');
    const [resource] = queue ? [toGenerationResource(generation, queue)] : await resources(user.id, [generation]);
    res.status(202).location(`/v1/generations/${generation.id}`).json(resource);
  }

  router.post('/', (req, res) =>
    submit(req, res, async () => {
      const body = parseOr400(createGenerationBody, req.body ?? {});
      return { request: { ...body, metadata: Object.fromEntries(Object.entries(body.metadata).sort()) } };
    }),
  );

  /** A new job with the request of one of mine, linked to it by retry_of; admitted, answered and idempotent like a submit. */
  router.post('/:id/retry', (req, res) =>
    submit(req, res, async (user) => {
      const earlier = await getGeneration(deps.db, user.id, req.params.id);
      if (!earlier) throw notFound('generation');
      return { request: requestFromRow(earlier), retryOf: earlier.id };
    }),
  );

  router.get('/', async (req, res) => {
    const user = currentUser(req);
    const query = parseOr400(listGenerationsQuery, req.query);
    const after = query.cursor === undefined ? undefined : decodeCursor(query.cursor);
    if (after === null) throw new ApiError(400, 'invalid_cursor', 'cursor: not a cursor this API returned');
    const { rows, hasMore, next } = await listGenerations(deps.sql, user.id, {
      status: query.status,
      createdAfter: query.created_after ? new Date(query.created_after) : undefined,
      createdBefore: query.created_before ? new Date(query.created_before) : undefined,
      limit: query.limit,
      after,
    });
    res.json({
      data: await resources(user.id, rows),
      has_more: hasMore,
      next_cursor: next ? encodeCursor(next) : null,
    });
  });

  router.post('/:id/cancel', async (req, res) => {
    const generation = await cancelGeneration(deps, currentUser(req), req.params.id);
    res.status(generation.status === 'canceled' ? 200 : 202).json(toGenerationResource(generation));
  });

  router.get('/:id', async (req, res) => {
    const generation = await getGeneration(deps.db, currentUser(req).id, req.params.id);
    if (!generation) throw notFound('generation');
    const [resource] = await resources(generation.userId, [generation]);
    res.json(resource);
  });

  return router;
}
