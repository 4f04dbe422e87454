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
import { backendCancels } from '../domain/backend-specs';
import { ApiError, notFound } from '../wire/errors';
import { idempotencyKeyHeader, listGenerationsQuery } from '../wire/requests';
import { decodeCursor, encodeCursor, toGenerationResource } from '../wire/serialize';
import type { GenerationEstimate } from '../wire/resources';
import type { QueuePositions } from './queue-position';
import { describeSubmission, parseGenerationRequest, type SubmitDeps } from './submit';
import { parseOr400 } from './validation';
import { isTerminal } from '../domain/generation-state';
import type { GenerationEventHub } from '../notifications/event-hub';
import { preferredWait, waitForEnd, type WaitSlots } from './prefer-wait';
import type { InputChecks } from './generation-inputs';
import { idempotencyKeysTaken } from './admission-store';

/** A submit's body as the request it asks for (its metadata in key order, so equal requests hash alike). */

/** /v1/generations: submit, read one, list mine. Mounted behind requireUser. */
export function generationsRouter(
  deps: SubmitDeps & { sql: Sql; admission: Admission; queue: QueuePositions; hub: GenerationEventHub; waits: WaitSlots; inputs: InputChecks },
): Router {
  const router = Router();

  /**
   * The request's image and remix checked before admission. A retry of a submit whose key is taken is not checked again:
   * admission replays it (or refuses another body), so a replay answers with its job even if the image has since gone.
   */
  async function checkInputs(user: UserRow, request: GenerationRequest, idempotencyKey: string | undefined): Promise<void> {
    if (request.input_reference === undefined && request.remix_of === undefined) return;
    if (idempotencyKey !== undefined && (await idempotencyKeysTaken(deps.sql, user.id, [idempotencyKey])).has(idempotencyKey)) return;
    await deps.inputs.check(user, request);
  }

  /** Runs a step of a submit, counting its failure as the submit's refusal. */
  async function countRefusal<T>(user: UserRow, step: () => Promise<T>): Promise<T> {
    try {
      return await step();
    } catch (err) {
      refusals.inc({ tier: user.tier, reason: err instanceof ApiError ? err.code : 'internal_error' });
      throw err;
    }
  }

  /** Resources, with queue position and ETA for the queued ones (looked up only when one is queued). */
  async function resources(userId: string, rows: Array<GenerationRow | ListedGeneration>) {
    const queued = rows.filter((row) => row.status === 'queued');
    const positions = queued.length === 0 ? undefined : await deps.queue.positions(userId, queued.length === 1 ? queued[0] : undefined);
    return rows.map((row) => toGenerationResource(row, positions?.get(row.id)));
  }

  /**
   * A submit, or a rerun of an earlier job (`retryOf`): the same admission, answer and headers. `readRequest` reads the
   * request (the body, or the earlier job's row) inside the refusal count, so a bad body or an unknown job counts as one.
   */
  async function submit(req: Request, res: Response, readRequest: (user: UserRow) => Promise<{ request: GenerationRequest; retryOf?: string }>) {
    const user = currentUser(req);
    const key = req.get('idempotency-key');
    const idempotencyKey = key === undefined ? undefined : parseOr400(idempotencyKeyHeader, key, 'invalid_idempotency_key');
    // A user whose bucket is known to be empty is refused before anything is read or checked for the submit.
    await countRefusal(user, () => deps.admission.refuseIfKnownEmpty(user, idempotencyKey));
    // A wait's slot is taken before admission: a submit refused for want of one leaves nothing behind.
    const wait = preferredWait(req.get('prefer'));
    const release = wait === undefined ? undefined : deps.waits.take(user.id);
    try {
      await admitAndAnswer(res, user, idempotencyKey, wait, readRequest);
    } finally {
      release?.();
    }
  }

  async function admitAndAnswer(
    res: Response,
    user: UserRow,
    idempotencyKey: string | undefined,
    wait: number | undefined,
    readRequest: (user: UserRow) => Promise<{ request: GenerationRequest; retryOf?: string }>,
  ) {
    const submitted = await countRefusal(user, async () => {
      const { request, retryOf } = await readRequest(user);
      await checkInputs(user, request, idempotencyKey);
      // Admission (rate, active jobs, daily quota, tier backlog) runs first; a replay is neither refused nor counted.
      return deps.admission.admit(describeSubmission(deps.config, user, request, idempotencyKey, retryOf), deps);
    });
    const { result, headers, queue } = submitted;
    const { replayed } = result;
    submissions.inc({ tier: user.tier, outcome: replayed ? 'replayed' : 'accepted' });
    res.set(headers);
    if (replayed) res.set('Idempotent-Replayed', 'true');
    const generation = wait === undefined ? result.generation : await waited(res, user.id, result.generation, wait);
    if (!generation) return;
    const [resource] = queue && generation === result.generation ? [toGenerationResource(generation, queue)] : await resources(user.id, [generation]);
    // A wait that saw the job end gives the final answer (RFC 7240's example of wait): 200. Otherwise, as without a
    // wait (a replay of a submit whose job has ended included), the submit was accepted: 202.
    res.status(wait !== undefined && isTerminal(generation.status) ? 200 : 202).location(`/v1/generations/${generation.id}`).json(resource);
  }

  /**
   * Prefer: wait=N honoured: the job as it is once it ended or N seconds passed (re-read), with Preference-Applied;
   * undefined when the client went away meanwhile (nothing is answered).
   */
  async function waited(res: Response, userId: string, generation: GenerationRow, seconds: number): Promise<GenerationRow | undefined> {
    res.vary('Prefer');
    if (!isTerminal(generation.status)) {
      const outcome = await waitForEnd(deps.hub, res, { userId, jobId: generation.id, seconds });
      if (outcome === 'gone') return undefined;
      generation = (await getGeneration(deps.db, userId, generation.id)) ?? generation;
    }
    res.set('Preference-Applied', `wait=${seconds}`);
    return generation;
  }

  router.post('/', (req, res) =>
    submit(req, res, async () => ({ request: parseGenerationRequest(req.body, deps.config) })),
  );

  /**
   * What a submit of this body would get now, changing nothing: its price, whether it would be admitted (and if not, the
   * code and message a submit would be refused with), and where it would start in the queue.
   */
  router.post('/estimate', async (req, res) => {
    const user = currentUser(req);
    const request = parseGenerationRequest(req.body, deps.config);
    const estimate = await deps.admission.estimate(user, async () => {
      await checkInputs(user, request, undefined);
      return describeSubmission(deps.config, user, request, undefined);
    });
    res.json({
      credits: estimate.credits,
      admitted: estimate.admitted,
      refusal: estimate.refusal,
      queue_position: estimate.queue?.position ?? null,
      eta_seconds: estimate.queue?.etaSeconds ?? null,
    } satisfies GenerationEstimate);
  });

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
      batchId: query.batch_id,
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
    // A job already handed to a backend without a cancel (Veo) ends here, but may be rendered there to its end.
    // The backend the job's attempt ran on (routing), else the only one.
    const { backends } = deps.config.backend;
    const ranOn = backends.find((b) => b.name === generation.backend) ?? backends[0];
    if (generation.backendJobId && !backendCancels(ranOn.kind)) res.setHeader('Backend-Cancel', 'unsupported');
    res.status(generation.status === 'canceled' ? 200 : 202).json(toGenerationResource(generation));
  });

  router.get('/:id', async (req, res) => {
    const found = await getGeneration(deps.db, currentUser(req).id, req.params.id);
    if (!found) throw notFound('generation');
    const wait = preferredWait(req.get('prefer'));
    let generation: GenerationRow | undefined = found;
    if (wait !== undefined) {
      // A job already ended needs no wait, nor a slot.
      const release = isTerminal(found.status) ? undefined : deps.waits.take(found.userId);
      try {
        generation = await waited(res, found.userId, found, wait);
      } finally {
        release?.();
      }
      if (!generation) return;
    }
    const [resource] = await resources(generation.userId, [generation]);
    res.json(resource);
  });

  return router;
}
