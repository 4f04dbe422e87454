/**
 * The email digest workflow's name, input and signal: one workflow per user (its id derives from the user id), started
 * or signalled with signalWithStart by the notify step (src/notifications/email-queue.ts), run by
 * src/workflows/email-digest.ts.
 */
import { defineSignal } from '@temporalio/workflow';

export const EMAIL_DIGEST_WORKFLOW_TYPE = 'emailDigestWorkflow';

export function emailDigestWorkflowId(userId: string): string {
  return `email-digest-${userId}`;
}

export interface EmailDigestInput {
  userId: string;
  /** Set when a run continues as new with endings already waiting: a window starts at once (`now`: a mail, without one). */
  pending?: { digestSeconds: number; now?: boolean };
}

/** An ending of the user's was queued for mail (its row is `pending` in email_notifications): mail it within the window. */
export interface EndingQueuedSignal {
  /** The user's digest window when the ending was queued: 0 mails each ending on its own, at once. */
  digestSeconds: number;
}

export const endingQueuedSignal = defineSignal<[EndingQueuedSignal]>('emailEndingQueued');
