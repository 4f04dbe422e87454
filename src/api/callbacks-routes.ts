import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import express, { Router, type Request, type RequestHandler } from 'express';
import { z } from 'zod';
import { attemptRecord, callbackOwnership, oweBackendCancel } from '../dispatch/backend-orphans';
import { announceBackendJobEvent } from '../dispatch/backend-wakeups';
import { BackendUnavailableError, type BackendCallback, type GenerationBackend } from '../backend/types';
import type { Sql } from '../db/client';
import { parseBackendClientKey } from '../domain/generation';
import type { Logger } from '../lib/logger';
import { callbacks as callbackMetrics, callbacksSignedWithPrevious } from '../lib/metrics';
import { verifyWebhook, WebhookVerificationError } from '../lib/webhook-signature';
import { backendEventSignal, type BackendEventType } from '../contracts/generation';
import { ApiError } from '../wire/errors';
import { withTemporalDeadline } from '../lib/temporal-deadline';
import { parseOr400 } from './validation';
import { clientOf, failuresRefusal } from './auth';
import { TokenBuckets } from './token-buckets';

const callbackSchema = z.object({
  event_id: z.string().min(1),
  type: z.enum(['job.started', 'job.succeeded', 'job.failed', 'job.canceled']),
  sequence: z.number().int(),
  job: z.object({
    id: z.string().min(1),
    client_key: z.string().min(1),
    status: z.string(),
    video_url: z.string().nullable().optional(),
    error: z.object({ code: z.string(), message: z.string() }).nullable().optional(),
  }),
});

const EVENT_TYPES: Record<BackendCallback['type'], BackendEventType> = {
  'job.started': 'started',
  'job.succeeded': 'succeeded',
  'job.failed': 'failed',
  'job.canceled': 'canceled',
};

/** A callback, verified and read, from the simulator's contract or a provider adapter's. */
interface ReadCallback {
  eventId: string;
  type: BackendCallback['type'];
  clientKey: string;
  job: { id: string; video_url?: string | null; error?: { code: string; message: string } | null };
}

/**
 * POST /internal/backend/callbacks: the backend's signed webhook that a job ended becomes a signal to the job's workflow
 * (and a wake-up of the GPU activity holding its slot). It answers 2xx only once the signal was accepted (or the job is
 * long gone), so a failed signal makes the backend retry. `job.started` is acknowledged only: the GPU activity announced
 * the acceptance itself.
 * `webhookSecrets` is the current secret, then during a rotation the previous one: a signature by either is accepted.
 * POST /internal/backend/callbacks/<backend name>: a provider's own webhook (Replicate, fal), verified and read by that
 * backend's adapter (`verifyCallback`), then the same path, unless the provider job it names is not the one its attempt
 * follows (src/dispatch/backend-orphans.ts).
 * A callback whose signature fails takes a token of its address's bucket (`failedSignatures`: the failed-authentication
 * limits, in a bucket apart from API keys', so a key-guesser behind the backend's address does not stop its callbacks);
 * while the bucket is empty, the address's callbacks are refused 429 before their body is read or checked.
 */
export function callbacksRouter({
  client,
  sql,
  webhookSecrets,
  failedSignatures,
  logger,
  backends = new Map(),
}: {
  client: Client;
  sql: Sql;
  webhookSecrets: string[];
  logger: Logger;
  /** The configured backends by name: those with webhooks of their own verify them. */
  backends?: ReadonlyMap<string, GenerationBackend>;
  /** Failed signatures an address may send (a burst, refilled per second) before its callbacks are refused unread. */
  failedSignatures: { burst: number; perSecond: number };
}): Router {
  const router = Router();
  const rawBody = express.raw({ type: () => true, limit: '256kb' });
  const failures = new TokenBuckets({ ...failedSignatures, maxKeys: 100_000 });
  /** An address out of failed signatures: refused, and kept out while it keeps sending (as a key-guesser is). */
  const refuseFailing: RequestHandler = (req, _res, next) => next(failuresRefusal(failures, clientOf(req)));

  router.use(refuseFailing);

  router.post('/', rawBody, async (req, res) => {
    const raw = Buffer.isBuffer(req.body) ? req.body.toString('utf8') : '';
    try {
      // Counted so the operator knows when the backend has stopped using the old secret and it can be dropped.
      if (verifyWebhook(webhookSecrets, req.headers, raw) > 0) callbacksSignedWithPrevious.inc();
    } catch (err) {
      throw invalidSignature(req, err);
    }
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      throw new ApiError(400, 'invalid_json', 'the callback body is not valid JSON');
    }
    const callback = parseOr400(callbackSchema, json);
    const answer = await apply({ eventId: callback.event_id, type: callback.type, clientKey: callback.job.client_key, job: callback.job });
    res.status(200).json(answer);
  });

  router.post('/:backend', rawBody, async (req, res) => {
    const backend = backends.get(req.params.backend);
    if (!backend?.verifyCallback) throw new ApiError(404, 'not_found', `no backend named ${req.params.backend} calls back here`);
    const raw = Buffer.isBuffer(req.body) ? req.body.toString('utf8') : '';
    let callback: ReadCallback;
    try {
      callback = await backend.verifyCallback({ headers: req.headers, rawBody: raw, query: req.query as Record<string, unknown> });
    } catch (err) {
      if (err instanceof WebhookVerificationError) throw invalidSignature(req, err);
      // Our side could not check it (the provider's keys out of reach): the provider retries.
      if (err instanceof BackendUnavailableError) throw new ApiError(503, 'verification_unavailable', 'the callback could not be verified now; retry', undefined, { 'Retry-After': '5' });
      throw new ApiError(400, 'invalid_callback', 'the callback body is not one this backend sends');
    }
    res.status(200).json((await disowned(req.params.backend, callback)) ?? (await apply(callback)));
  });

  /**
   * A provider's webhook for a job its attempt does not follow (an unanswered submit's job, or one of an attempt that has
   * ended or moved on): acknowledged without a signal, and, while the job still runs, its cancel is owed (sent by the
   * dispatchers), so it is not left running unobserved. Undefined for a job its attempt follows: the usual path.
   */
  async function disowned(backend: string, callback: ReadCallback): Promise<{ received: true; applied: false } | undefined> {
    const target = parseBackendClientKey(callback.clientKey);
    if (!target) return undefined;
    const ownership = callbackOwnership(await attemptRecord(sql, target.jobId), target, callback.job.id);
    if (ownership === 'follows') return undefined;
    const running = callback.type === 'job.started';
    if (running) await oweBackendCancel(sql, { backend, backendJobId: callback.job.id, jobId: target.jobId });
    logger.info({ jobId: target.jobId, backend, backendJobId: callback.job.id, attempt: target.attempt, ownership, type: callback.type }, running ? 'a provider job its attempt does not follow is running: its cancel is owed' : 'webhook for a provider job its attempt does not follow: acknowledged');
    callbackMetrics.inc({ outcome: 'disowned' });
    return { received: true, applied: false };
  }

  function invalidSignature(req: Request, err: unknown): unknown {
    if (!(err instanceof WebhookVerificationError)) return err;
    callbackMetrics.inc({ outcome: 'invalid_signature' });
    failures.take(clientOf(req));
    return new ApiError(401, 'invalid_signature', err.message);
  }

  async function apply(callback: ReadCallback): Promise<{ received: true; applied: boolean }> {
    const target = parseBackendClientKey(callback.clientKey);
    if (!target) throw new ApiError(400, 'unknown_client_key', 'job.client_key: not a key this service issued');
    const log = logger.child({ jobId: target.jobId, workflowId: target.jobId, backendJobId: callback.job.id, eventId: callback.eventId });
    if (callback.type === 'job.started') {
      // The GPU activity told the workflow already, when the backend accepted the job: a second signal would cost an
      // action and a workflow task for nothing. The callbacks that end a job are the ones the workflow waits for.
      callbackMetrics.inc({ outcome: 'ignored' });
      return { received: true, applied: false };
    }
    try {
      await withTemporalDeadline(client, () =>
        client.workflow.getHandle(target.jobId).signal(backendEventSignal, {
          run: target.run,
          attempt: target.attempt,
          type: EVENT_TYPES[callback.type],
          backendJobId: callback.job.id,
          videoUrl: callback.job.video_url ?? null,
          error: callback.job.error ?? null,
        }),
      );
    } catch (err) {
      if (err instanceof WorkflowNotFoundError) {
        log.info({ type: callback.type }, 'callback for a finished or unknown job ignored');
        callbackMetrics.inc({ outcome: 'ignored' });
        return { received: true, applied: false };
      }
      log.warn({ err }, 'callback could not be signalled; the backend will retry');
      callbackMetrics.inc({ outcome: 'unavailable' });
      throw new ApiError(503, 'temporal_unavailable', 'the callback could not be recorded; retry', undefined, { 'Retry-After': '1' });
    }
    // Wake the GPU activity holding this job's slot so it frees the slot now rather than at its next poll.
    await announceBackendJobEvent(sql, callback.job.id).catch((err: unknown) => log.warn({ err }, 'wakeup notify failed'));
    log.debug({ type: callback.type }, 'callback signalled');
    callbackMetrics.inc({ outcome: 'signalled' });
    return { received: true, applied: true };
  }

  return router;
}
