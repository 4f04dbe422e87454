import { proxyActivities } from '@temporalio/workflow';
import type * as reconcileActivities from '../activities/reconcile';

type ReconcileActivities = ReturnType<typeof reconcileActivities.createReconcileActivities>;

const { reconcileProjection } = proxyActivities<ReconcileActivities>({
  startToCloseTimeout: '5m',
  // A pass heartbeats as it goes: one whose worker died, or whose completion was lost while Temporal was away, is tried
  // again within this, not after the 5 minutes; until then the schedule skips every pass (overlap SKIP).
  heartbeatTimeout: '20s',
  retry: { maximumAttempts: 3 },
});

/** Run by a Temporal schedule (and on demand: `temporal schedule trigger`): one pass of projection repair. */
export async function reconcilerWorkflow(options: { quietForMs: number; limit: number }) {
  return reconcileProjection(options);
}
