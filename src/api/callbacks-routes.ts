import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import express, { Router } from 'express';
import { z } from 'zod';
import { announceBackendJobEvent } from '../dispatch/backend-wakeups';
import type { BackendCallback } from '../backend/types';
import type { Sql } from '../db/client';
import { parseBackendClientKey } from '../domain/generation';
import type { Logger } from '../lib/logger';
import { callbacks as callbackMetrics, callbacksSignedWithPrevious } from '../lib/metrics';
import { verifyWebhook, WebhookVerificationError } from '../lib/webhook-signature';
import { backendEventSignal, type BackendEventType } from '../contracts/generation';
import { ApiError } from '../wire/errors';
import { withTemporalDeadline } from '../lib/temporal-deadline';
import { parseOr400 } from './validation';

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

/**
 * POST /internal/backend/callbacks: the backend's signed webhook that a job ended becomes a signal to the job's workflow
 * (and a wake-up of the GPU activity holding its slot). It answers 2xx only once the signal was accepted (or the job is
 * long gone), so a failed signal makes the backend retry. `job.started` is acknowledged only: the GPU activity announced
 * the acceptance itself.
 * `webhookSecrets` is the current secret, then during a rotation the previous one: a signature by either is accepted.
 */
export function callbacksRouter({ client, sql, webhookSecrets, logger }: { client: Client; sql: Sql; webhookSecrets: string[]; logger: Logger }): Router {
  const router = Router();
  router.post('/', express.raw({ type: () => true, limit: '256kb' }), async (req, res) => {
    const raw = Buffer.isBuffer(req.body) ? req.body.toString('utf8') : '';
    try {
      // Counted so the operator knows when the backend has stopped using the old secret and it can be dropped.
      if (verifyWebhook(webhookSecrets, req.headers, raw) > 0) callbacksSignedWithPrevious.inc();
    } catch (err) {
      if (err instanceof WebhookVerificationError) {
        callbackMetrics.inc({ outcome: 'invalid_signature' });
        throw new ApiError(401, 'invalid_signature', err.message);
      }
      throw err;
    }
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      throw new ApiError(400, 'invalid_json', 'the callback body is not valid JSON');
    }
    const callback = parseOr400(callbackSchema, json);
    const target = parseBackendClientKey(callback.job.client_key);
    if (!target) throw new ApiError(400, 'unknown_client_key', 'job.client_key: not a key this service issued');
    const log = logger.child({ jobId: target.jobId, workflowId: target.jobId, backendJobId: callback.job.id, eventId: callback.event_id });
    if (callback.type === 'job.started') {
      // The GPU activity told the workflow already, when the backend accepted the job: a second signal would cost an
      // action and a workflow task for nothing. The callbacks that end a job are the ones the workflow waits for.
      callbackMetrics.inc({ outcome: 'ignored' });
      res.status(200).json({ received: true, applied: false });
      return;
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
        res.status(200).json({ received: true, applied: false });
        return;
      }
      log.warn({ err }, 'callback could not be signalled; the backend will retry');
      callbackMetrics.inc({ outcome: 'unavailable' });
      throw new ApiError(503, 'temporal_unavailable', 'the callback could not be recorded; retry', undefined, { 'Retry-After': '1' });
    }
    // Wake the GPU activity holding this job's slot so it frees the slot now rather than at its next poll.
    await announceBackendJobEvent(sql, callback.job.id).catch((err: unknown) => log.warn({ err }, 'wakeup notify failed'));
    log.debug({ type: callback.type }, 'callback signalled');
    callbackMetrics.inc({ outcome: 'signalled' });
    res.status(200).json({ received: true, applied: true });
  });
  return router;
}
