import type { ActivityInterceptorsFactory } from '@temporalio/worker';
import type { GpuSlots } from './gpu-slots';

/**
 * Wraps each GPU activity in a claim on one of the dispatcher's slot leases: the job counts as in flight from before it
 * reaches the backend until its activity ends. When capacity has just fallen, a slot reserved under the old number may
 * still receive a task; its claim then waits (heartbeating, cancellable) until the pool runs fewer jobs than the new one.
 */
export function gpuSlotClaims(slots: GpuSlots): ActivityInterceptorsFactory {
  return (ctx) => ({
    inbound: {
      async execute(input, next) {
        const { workflowExecution, heartbeatDetails, heartbeatTimeoutMs } = ctx.info;
        // A retried attempt that heartbeated its backend job resumes it: that job is in flight whatever the capacity.
        const resumed = heartbeatDetails !== undefined && heartbeatDetails !== null;
        const waitMs = Math.max(100, Math.min(1_000, (heartbeatTimeoutMs ?? 3_000) / 3));
        const leaseId = await slots.claim(workflowExecution?.workflowId ?? ctx.info.activityId, {
          force: resumed,
          whileWaiting: async () => {
            await Promise.race([slots.nextChange(waitMs), ctx.cancelled]);
            ctx.heartbeat();
          },
        });
        try {
          return await next(input);
        } finally {
          slots.unclaim(leaseId);
        }
      },
    },
  });
}
