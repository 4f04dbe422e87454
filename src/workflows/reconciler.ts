import { proxyActivities } from '@temporalio/workflow';
import type * as reconcileActivities from '../activities/reconcile';

type ReconcileActivities = ReturnType<typeof reconcileActivities.createReconcileActivities>;

const { reconcileProjection } = proxyActivities<ReconcileActivities>({
  startToCloseTimeout: '5m',
  retry: { maximumAttempts: 3 },
});

/** Run by a Temporal schedule (and on demand: `temporal schedule trigger`): one pass of projection repair. */
export async function reconcilerWorkflow(options: { quietForMs: number; limit: number }) {
  return reconcileProjection(options);
}
