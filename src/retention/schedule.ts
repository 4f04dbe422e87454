import { ScheduleAlreadyRunning, ScheduleOverlapPolicy, type Client } from '@temporalio/client';
import type { Config } from '../config';

/** One retention schedule per deployment (named after its task queue); operators trigger it with `temporal schedule trigger`. */
export function retentionScheduleId(config: Config): string {
  return `videogen-retention-${config.worker.generationTaskQueue}`;
}

/** Created by every generation worker at start, as the reconciler's is; a run still going when the next is due skips it. */
export async function ensureRetentionSchedule(client: Client, config: Config): Promise<void> {
  try {
    await client.schedule.create({
      scheduleId: retentionScheduleId(config),
      spec: { intervals: [{ every: config.retention.intervalMs }] },
      action: { type: 'startWorkflow', workflowType: 'retentionWorkflow', taskQueue: config.worker.generationTaskQueue, args: [] },
      policies: { overlap: ScheduleOverlapPolicy.SKIP },
    });
  } catch (err) {
    if (!(err instanceof ScheduleAlreadyRunning)) throw err;
  }
}
