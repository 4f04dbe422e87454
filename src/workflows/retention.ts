import { ActivityCancellationType, proxyActivities } from '@temporalio/workflow';
import type * as retentionActivities from '../activities/retention';

type RetentionActivities = ReturnType<typeof retentionActivities.createRetentionActivities>;

const { pruneExpiredData } = proxyActivities<RetentionActivities>({
  // A first run over a long history may take hours; each batch heartbeats, and a retry resumes where it stood.
  startToCloseTimeout: '12h',
  heartbeatTimeout: '20s',
  retry: { maximumAttempts: 5 },
  // A cancelled run ends once the activity has stopped (at its next batch), not while it still deletes.
  cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
});

/** Run by a Temporal schedule (and on demand: `temporal schedule trigger`): one pass of retention over every table. */
export async function retentionWorkflow() {
  return pruneExpiredData();
}
