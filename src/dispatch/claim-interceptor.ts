import { ApplicationFailure } from '@temporalio/common';
import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import { RAISED_PRIORITIES } from '../domain/generation';
import type { GpuSlots } from './gpu-slots';

/** How soon a task handed back is in Temporal's queue again. */
const HANDED_BACK_RETRY_MS = 500;

const handBack = (reason: string) => ApplicationFailure.create({ type: 'GpuTaskHandedBack', message: `${reason}: the task goes back to the queue`, nextRetryDelay: HANDED_BACK_RETRY_MS });

/**
 * Wraps each GPU activity in a claim on one of the dispatcher's slot leases: the job counts as in flight from before it
 * reaches the backend until its activity ends. A task that was taken from the queue ahead of its turn is handed back
 * (a retry of the same activity, so the workflow sees nothing), and back in the queue Temporal's priority and fairness
 * decide again who gets the slot:
 * - capacity fell after the slot was reserved, and the pool already runs as many jobs as the new number;
 * - a job raised to its lane's first-job priority whose user already had a later job of that lane served: the raise went
 *   to the wrong job (a free slot takes whichever task of a burst arrives first, and that one may not be the raised one),
 *   and would put this one ahead of another user's first job. Handed back once; its second dispatch is kept.
 */
export function gpuSlotClaims(slots: GpuSlots): ActivityInterceptorsFactory {
  return (ctx) => ({
    inbound: {
      async execute(input, next) {
        const { workflowExecution, heartbeatDetails, attempt, priority } = ctx.info;
        const jobId = workflowExecution?.workflowId ?? ctx.info.activityId;
        // A retried attempt that heartbeated its backend job resumes it: that job is in flight whatever the capacity.
        const resumed = heartbeatDetails !== undefined && heartbeatDetails !== null;
        const gpuInput = input.args[0] as { acceptedAt?: string } | undefined;
        const raisedIn = priority?.priorityKey === undefined ? undefined : RAISED_PRIORITIES.get(priority.priorityKey);
        if (!resumed && attempt === 1 && raisedIn !== undefined && priority?.fairnessKey && gpuInput?.acceptedAt) {
          if (await slots.firstJobRaiseSpent(jobId, priority.fairnessKey, new Date(gpuInput.acceptedAt), raisedIn)) {
            throw handBack('a later job of this user was served first, so this one is no longer its first');
          }
        }
        const leaseId = await slots.claim(jobId, { force: resumed });
        if (leaseId === undefined) throw handBack('GPU capacity fell after this slot was reserved');
        try {
          return await next(input);
        } finally {
          slots.unclaim(leaseId);
        }
      },
    },
  });
}
