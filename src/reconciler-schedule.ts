import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import type { Config } from './config';

/** One reconciler schedule per deployment (named after its task queue); operators trigger it with `temporal schedule trigger`. */
export function reconcilerScheduleId(config: Config): string {
  return `videogen-reconciler-${config.worker.generationTaskQueue}`;
}

export async function ensureReconcilerSchedule(client: Client, config: Config): Promise<void> {
  const { reconcileIntervalMs } = config.generation;
  try {
    await client.schedule.create({
      scheduleId: reconcilerScheduleId(config),
      spec: { intervals: [{ every: reconcileIntervalMs }] },
      action: {
        type: 'startWorkflow',
        workflowType: 'reconcilerWorkflow',
        taskQueue: config.worker.generationTaskQueue,
        // Rows quiet for two intervals are compared with Temporal; a pass handles at most 500.
        args: [{ quietForMs: reconcileIntervalMs * 2, limit: 500 }],
      },
      policies: { overlap: ScheduleOverlapPolicy.SKIP },
    });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
  }
}
