import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import { WEBHOOK_DELIVERY_WORKFLOW_TYPE, type WebhookDeliveryInput } from '../contracts/webhook-delivery';

/** Starts delivery workflows. Ids are deterministic, so starting the same delivery twice runs it once. */
export interface DeliveryStarter {
  client: Client;
  /** The generation task queue, whose workers run the delivery workflow and its activity. */
  taskQueue: string;
  /** The retry schedule, scaled. */
  scheduleMs: number[];
  /** The HTTP timeout of one attempt. */
  timeoutMs: number;
}

/** Room around the HTTP timeout for DNS, signing and the delivery log's write. */
const ATTEMPT_OVERHEAD_MS = 10_000;

export function deliveryWorkflowId(deliveryId: string, replay = 0): string {
  return replay === 0 ? `webhook-delivery-${deliveryId}` : `webhook-delivery-${deliveryId}-replay-${replay}`;
}

async function start(starter: DeliveryStarter, workflowId: string, input: WebhookDeliveryInput): Promise<void> {
  try {
    await starter.client.workflow.start(WEBHOOK_DELIVERY_WORKFLOW_TYPE, {
      taskQueue: starter.taskQueue,
      workflowId,
      args: [input],
      workflowIdConflictPolicy: 'USE_EXISTING',
      // A finished delivery is never run again under its id: a rerun of the notify step changes nothing.
      workflowIdReusePolicy: 'REJECT_DUPLICATE',
    });
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) throw err;
  }
}

/** The delivery's scheduled run: every attempt of the retry schedule. */
export function startScheduledDelivery(starter: DeliveryStarter, deliveryId: string): Promise<void> {
  return start(starter, deliveryWorkflowId(deliveryId), {
    deliveryId,
    firstAttempt: 1,
    scheduleMs: starter.scheduleMs,
    attemptTimeoutMs: starter.timeoutMs + ATTEMPT_OVERHEAD_MS,
  });
}

/** A manual replay: one attempt now, numbered after the delivery's earlier attempts. */
export function startReplay(starter: DeliveryStarter, deliveryId: string, replay: number, firstAttempt: number): Promise<void> {
  return start(starter, deliveryWorkflowId(deliveryId, replay), {
    deliveryId,
    firstAttempt,
    scheduleMs: [0],
    attemptTimeoutMs: starter.timeoutMs + ATTEMPT_OVERHEAD_MS,
  });
}
