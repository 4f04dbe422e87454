import { proxyActivities, sleep } from '@temporalio/workflow';
import type * as notifyActivities from '../activities/notify';
import type { WebhookDeliveryInput, WebhookDeliveryOutcome } from '../contracts/webhook-delivery';

type NotifyActivities = ReturnType<typeof notifyActivities.createNotifyActivities>;

/**
 * Delivers one event to one destination on the retry schedule, as durable timers: a worker restart in the middle of a
 * 10-hour wait loses nothing. Each attempt is one activity (one HTTP POST, logged); the event's webhook-id never changes.
 */
export async function webhookDeliveryWorkflow({ deliveryId, firstAttempt, scheduleMs, attemptTimeoutMs }: WebhookDeliveryInput): Promise<WebhookDeliveryOutcome> {
  // HTTP failures come back as outcomes; only infrastructure errors (database) throw, and those are retried.
  const { attemptWebhookDelivery } = proxyActivities<NotifyActivities>({
    startToCloseTimeout: attemptTimeoutMs,
    retry: { initialInterval: '1s', maximumInterval: '1m' },
  });
  for (let i = 0; i < scheduleMs.length; i++) {
    if (scheduleMs[i] > 0) await sleep(scheduleMs[i]);
    const nextDelayMs = i + 1 < scheduleMs.length ? scheduleMs[i + 1] : null;
    const outcome = await attemptWebhookDelivery({ deliveryId, attempt: firstAttempt + i, nextDelayMs });
    if (outcome !== 'retry') return outcome;
  }
  return 'failed';
}
