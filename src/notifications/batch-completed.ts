import { eq } from 'drizzle-orm';
import type { Db } from '../db/client';
import { batches, type BatchRow } from '../db/schema';
import { isoString } from '../lib/iso-time';
import { toBatchResource } from '../wire/batches';
import { ensureDelivery } from './delivery-store';
import { startScheduledDelivery, type DeliveryStarter } from './delivery-starter';
import { endpointsFor } from './endpoint-store';
import { BATCH_COMPLETED, deliveryIdFor, notificationIdFor, webhookIdFor } from './events';
import { recordNotification } from './inbox';

/**
 * The batch.completed notification and webhook event of a batch whose last item ended. The batch row says whether it
 * has (a trigger sets completed_at in the transaction of the item change that left none queued or running:
 * drizzle/routines/batches.sql), so every item's notify step may ask: one inbox row and one delivery per endpoint come
 * of it, keyed by (batch, event) like a job's, however many items end at once and however often a step is retried.
 * Returns whether the batch has completed.
 */
export async function notifyBatchCompleted({ db, starter }: { db: Db; starter: DeliveryStarter }, batchId: string): Promise<boolean> {
  const [batch] = await db.select().from(batches).where(eq(batches.id, batchId));
  if (!batch?.completedAt) return false;
  const data = toBatchResource(batch);
  await recordNotification(db, {
    id: notificationIdFor(batchId, BATCH_COMPLETED),
    userId: batch.userId,
    jobId: batchId,
    event: BATCH_COMPLETED,
    ...batchText(batch),
    data,
  });
  const webhookId = webhookIdFor(batchId, BATCH_COMPLETED);
  const body = JSON.stringify({ type: BATCH_COMPLETED, timestamp: isoString(batch.completedAt), data });
  for (const endpoint of await endpointsFor(db, batch.userId, BATCH_COMPLETED)) {
    const delivery = await ensureDelivery(db, {
      id: deliveryIdFor(webhookId, endpoint.id),
      userId: batch.userId,
      jobId: batchId,
      endpointId: endpoint.id,
      eventType: BATCH_COMPLETED,
      webhookId,
      url: endpoint.url,
      body,
    });
    if (delivery.status === 'pending') await startScheduledDelivery(starter, delivery.id);
  }
  return true;
}

function batchText(batch: BatchRow): { title: string; message: string } {
  const others = [
    batch.failed > 0 ? `${batch.failed} failed` : undefined,
    batch.canceled > 0 ? `${batch.canceled} canceled` : undefined,
    batch.expired > 0 ? `${batch.expired} expired` : undefined,
  ].filter(Boolean);
  return {
    title: 'Your batch is done',
    message: `${batch.succeeded} of ${batch.total} videos succeeded${others.length > 0 ? ` (${others.join(', ')})` : ''}.`,
  };
}
