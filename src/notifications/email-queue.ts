import type { Client } from '@temporalio/client';
import { EMAIL_DIGEST_WORKFLOW_TYPE, emailDigestWorkflowId, endingQueuedSignal, type EmailDigestInput } from '../contracts/email-digest';
import type { Sql } from '../db/client';
import { queueEndingEmail } from './email-store';

/**
 * The notify step's part in email: queue the ending (keyed by user, job and event) when its user wants it mailed, and
 * wake the user's digest workflow — starting it if none runs — when this is the first ending since its last digest.
 */
export async function queueEndingForEmail(
  { sql, client, taskQueue }: { sql: Sql; client: Client; taskQueue: string },
  ending: { userId: string; jobId: string; event: string; status: string; endedAt: string },
): Promise<boolean> {
  const wake = await queueEndingEmail(sql, ending);
  if (!wake) return false;
  await client.workflow.signalWithStart(EMAIL_DIGEST_WORKFLOW_TYPE, {
    workflowId: emailDigestWorkflowId(ending.userId),
    taskQueue,
    args: [{ userId: ending.userId } satisfies EmailDigestInput],
    signal: endingQueuedSignal,
    signalArgs: [{ digestSeconds: wake.digestSeconds }],
  });
  return true;
}
