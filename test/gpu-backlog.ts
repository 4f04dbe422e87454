import { temporal } from '@temporalio/proto';
import type { Client } from '@temporalio/client';

/**
 * Activity tasks waiting in Temporal's backlog of a `gpu` task queue: the queue that fairness orders. (Our dispatchers
 * hold no queue of their own; a task is polled only once a slot lease is taken.)
 */
export async function gpuBacklog(client: Client, taskQueue: string): Promise<number> {
  const response = await client.workflowService.describeTaskQueue({
    namespace: client.options.namespace,
    taskQueue: { name: taskQueue, kind: temporal.api.enums.v1.TaskQueueKind.TASK_QUEUE_KIND_NORMAL },
    taskQueueType: temporal.api.enums.v1.TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
    reportStats: true,
  });
  return Number(response.stats?.approximateBacklogCount ?? 0);
}
