/** The webhook delivery workflow's name and input: started by src/notifications/delivery-starter.ts, run by src/workflows/webhook-delivery.ts. */

export const WEBHOOK_DELIVERY_WORKFLOW_TYPE = 'webhookDeliveryWorkflow';

export interface WebhookDeliveryInput {
  deliveryId: string;
  /** The attempt number of the first try (a manual replay continues the delivery's numbering). */
  firstAttempt: number;
  /** Wait before each attempt: the retry schedule, already scaled; a replay is `[0]`. */
  scheduleMs: number[];
  /** Upper bound for one attempt: the HTTP timeout plus the bookkeeping around it. */
  attemptTimeoutMs: number;
}

export type WebhookDeliveryOutcome = 'succeeded' | 'failed';
