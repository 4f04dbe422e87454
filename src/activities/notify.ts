import type { Client } from '@temporalio/client';
import { toGenerationResource } from '../wire/serialize';
import type { Config } from '../config';
import type { Db } from '../db/client';
import { readGeneration } from '../db/projection';
import { isTerminal, type GenerationStatus } from '../domain/generation-state';
import type { Logger } from '../lib/logger';
import { webhookDeliveries } from '../lib/metrics';
import { abandonDelivery, ensureDelivery, getDelivery, recordAttempt } from '../notifications/delivery-store';
import { startScheduledDelivery, type DeliveryStarter } from '../notifications/delivery-starter';
import { disableEndpoint, endpointsFor, findEndpoint, requestSecretFor, signingSecrets } from '../notifications/endpoint-store';
import { deliveryIdFor, endedEventType, notificationIdFor, notificationText, retryScheduleMs, webhookIdFor } from '../notifications/events';
import { recordNotification } from '../notifications/inbox';
import { queueEndingForEmail } from '../notifications/email-queue';
import { boundedLookup } from '../notifications/destination-guard';
import { sendWebhook } from '../notifications/webhook-sender';
import { notifyBatchCompleted } from '../notifications/batch-completed';

export interface NotifyActivityDeps {
  db: Db;
  client: Client;
  config: Config;
  logger: Logger;
}

export interface GenerationEndedInput {
  jobId: string;
  userId: string;
  status: GenerationStatus;
  /** The request's per-job webhook_url, if any. */
  webhookUrl: string | null;
  /** ISO time the workflow recorded the end; the event's timestamp. */
  endedAt: string;
}

export interface DeliveryAttemptInput {
  deliveryId: string;
  attempt: number;
  /** The wait before the next attempt, or null when this is the schedule's last. */
  nextDelayMs: number | null;
}

export type DeliveryAttemptOutcome = 'succeeded' | 'retry' | 'failed';

/**
 * The notify step of a finished generation, and the attempts of its webhook deliveries. Every write is keyed by the job
 * and event, so a retried activity or a re-run workflow task leaves one notification and one delivery per destination.
 */
export function createNotifyActivities({ db, client, config, logger }: NotifyActivityDeps) {
  const { webhookAllowedHosts, webhookRetryScale, webhookTimeoutMs } = config.notifications;
  const starter: DeliveryStarter = {
    client,
    taskQueue: config.worker.generationTaskQueue,
    scheduleMs: retryScheduleMs(webhookRetryScale),
    timeoutMs: webhookTimeoutMs,
  };
  // One per worker process: every delivery's look-ups share its time limit and in-flight cap.
  const lookup = boundedLookup({ timeoutMs: config.notifications.dnsTimeoutMs });

  async function notifyGenerationEnded({ jobId, userId, status, webhookUrl, endedAt }: GenerationEndedInput): Promise<void> {
    if (!isTerminal(status)) throw new Error(`notifyGenerationEnded: ${jobId} is ${status}, not terminal`);
    const row = await readGeneration(db.$client, jobId);
    if (!row) throw new Error(`notifyGenerationEnded: projection row ${jobId} missing`);
    const eventType = endedEventType(status);
    const data = toGenerationResource(row);

    const created = await recordNotification(db, {
      id: notificationIdFor(jobId, eventType),
      userId,
      jobId,
      event: eventType,
      ...notificationText(status, row.prompt, row.error?.message ?? null),
      data: { generation_id: jobId, status: data.status, video_url: data.video_url, error: data.error },
    });

    const webhookId = webhookIdFor(jobId, eventType);
    const body = JSON.stringify({ type: eventType, timestamp: endedAt, data });
    const targets = (await endpointsFor(db, userId, eventType)).map((e) => ({ endpointId: e.id as string | null, url: e.url }));
    if (webhookUrl) targets.push({ endpointId: null, url: webhookUrl });
    for (const { endpointId, url } of targets) {
      const delivery = await ensureDelivery(db, { id: deliveryIdFor(webhookId, endpointId), userId, jobId, endpointId, eventType, webhookId, url, body });
      // Finished already (an earlier run of this step got that far): nothing to start.
      if (delivery.status === 'pending') await startScheduledDelivery(starter, delivery.id);
    }
    // Email: queued when the user asked for this ending; their digest workflow mails it (src/workflows/email-digest.ts).
    const emailed = await queueEndingForEmail({ sql: db.$client, client, taskQueue: starter.taskQueue }, { userId, jobId, event: eventType, status, endedAt });
    logger.info({ jobId, workflowId: jobId, event: eventType, notified: created, webhooks: targets.length, emailed }, 'generation end notified');
    // The item that ended its batch (or any item's retried step after it) announces the batch, once.
    if (row.batchId !== null && (await notifyBatchCompleted({ db, starter }, row.batchId))) logger.info({ jobId, batchId: row.batchId }, 'batch completion notified');
  }

  async function attemptWebhookDelivery({ deliveryId, attempt, nextDelayMs }: DeliveryAttemptInput): Promise<DeliveryAttemptOutcome> {
    const delivery = await getDelivery(db, deliveryId);
    if (!delivery) return 'failed';
    if (delivery.status === 'succeeded') return 'succeeded';
    let secrets: string[];
    if (delivery.endpointId) {
      const endpoint = await findEndpoint(db, delivery.endpointId);
      if (!endpoint || endpoint.deletedAt || endpoint.disabledAt) {
        await abandonDelivery(db, deliveryId, endpoint?.deletedAt || !endpoint ? 'endpoint deleted' : 'endpoint disabled');
        return 'failed';
      }
      secrets = signingSecrets(endpoint);
    } else {
      secrets = [await requestSecretFor(db, delivery.userId)];
    }

    const response = await sendWebhook({
      url: delivery.url,
      webhookId: delivery.webhookId,
      body: delivery.body,
      secrets,
      timeoutMs: webhookTimeoutMs,
      allowedHosts: webhookAllowedHosts,
      lookup,
    });
    const succeeded = response.status !== null && response.status >= 200 && response.status < 300;
    // 410 Gone: the receiver asks us to stop; its endpoint is disabled and nothing more is sent.
    const gone = response.status === 410;
    if (gone && delivery.endpointId) await disableEndpoint(db, delivery.endpointId, `the receiver answered 410 Gone on ${new Date().toISOString()}`);
    const status = succeeded ? 'succeeded' : gone || nextDelayMs === null ? 'failed' : 'pending';
    await recordAttempt(db, {
      deliveryId,
      attempt,
      url: delivery.url,
      responseStatus: response.status,
      responseBody: response.body,
      error: response.error ?? (succeeded ? null : `HTTP ${response.status}`),
      durationMs: response.durationMs,
      status,
      nextAttemptAt: status === 'pending' ? new Date(Date.now() + nextDelayMs!) : null,
    });
    logger.info(
      { deliveryId, jobId: delivery.jobId, webhookId: delivery.webhookId, endpointId: delivery.endpointId, attempt, httpStatus: response.status, error: response.error, status },
      'webhook delivery attempt',
    );
    const outcome: DeliveryAttemptOutcome = succeeded ? 'succeeded' : status === 'failed' ? 'failed' : 'retry';
    webhookDeliveries.inc({ outcome });
    return outcome;
  }

  return { notifyGenerationEnded, attemptWebhookDelivery };
}
