import { createHash } from 'node:crypto';
import type { TerminalStatus } from '../domain/generation-state';

/** What a user is told about, by inbox and webhook. `generation.started` is accepted in filters but not yet emitted. */
export const WEBHOOK_EVENT_TYPES = ['generation.succeeded', 'generation.failed', 'generation.canceled', 'generation.expired', 'generation.started', 'batch.completed'] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENT_TYPES)[number];

export function endedEventType(status: TerminalStatus): Extract<WebhookEventType, `generation.${string}`> {
  return `generation.${status}`;
}

/** The last item of a batch ended (once per batch, besides each item's own ending). */
export const BATCH_COMPLETED = 'batch.completed';

/**
 * What a notification or delivery is about: its job_id column holds the generation's id, or a batch event's batch id.
 */
export function eventSubject(eventType: string, subjectId: string): { generation_id: string | null; batch_id: string | null } {
  return eventType.startsWith('batch.') ? { generation_id: null, batch_id: subjectId } : { generation_id: subjectId, batch_id: null };
}

const digest = (text: string) => createHash('sha256').update(text).digest('hex').slice(0, 32);

/** The Standard Webhooks message id of a job's event: the same on every retry, replay and re-run of the notify step. */
export function webhookIdFor(jobId: string, eventType: string): string {
  return `msg_${digest(`${jobId}\n${eventType}`)}`;
}

/** One delivery per (event, destination); a per-request webhook_url is the destination "request". */
export function deliveryIdFor(webhookId: string, endpointId: string | null): string {
  return `whd_${digest(`${webhookId}\n${endpointId ?? 'request'}`)}`;
}

export function notificationIdFor(jobId: string, eventType: string): string {
  return `ntf_${digest(`${jobId}\n${eventType}`)}`;
}

/** Svix's schedule: immediately, then 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h after the previous attempt. */
export const WEBHOOK_RETRY_SCHEDULE_MS = [0, 5_000, 5 * 60_000, 30 * 60_000, 2 * 3_600_000, 5 * 3_600_000, 10 * 3_600_000, 10 * 3_600_000];

/** The schedule multiplied by WEBHOOK_RETRY_SCALE (tests run it in milliseconds). */
export function retryScheduleMs(scale: number): number[] {
  return WEBHOOK_RETRY_SCHEDULE_MS.map((ms) => Math.round(ms * scale));
}

/** The inbox's wording of a terminal event. */
export function notificationText(status: TerminalStatus, prompt: string, errorMessage: string | null): { title: string; message: string } {
  const subject = prompt.length > 80 ? `${prompt.slice(0, 77)}...` : prompt;
  switch (status) {
    case 'succeeded':
      return { title: 'Your video is ready', message: `"${subject}" has finished generating.` };
    case 'failed':
      return { title: 'Your video could not be generated', message: `"${subject}" failed: ${errorMessage ?? 'unknown error'}` };
    case 'canceled':
      return { title: 'Generation canceled', message: `"${subject}" was canceled.` };
    case 'expired':
      return { title: 'Generation expired', message: `"${subject}" found no GPU in time and was not charged: ${errorMessage ?? 'queue limit reached'}` };
  }
}
