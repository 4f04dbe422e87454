import { randomBytes } from 'node:crypto';
import { temporal } from '@temporalio/proto';
import { gpuBacklog } from './gpu-backlog';
import { backendRuns, type BackendRun } from './scheduling-metrics';
import { apiClient, eventually, type Stack } from './harness';

/**
 * Scenario pieces for GPU scheduling tests and the fairness benchmark: floods of jobs, slots held shut while a backlog
 * builds in Temporal, and the dispatch order read back from the backend simulator.
 */

/** Limits out of the way (admission has its own tests): floods of thousands of jobs are accepted. */
export const UNLIMITED_ADMISSION: Record<string, string> = {
  RATE_LIMIT_BURST: '1000000',
  RATE_LIMIT_PER_SECOND: '1000000',
  TIER_MAX_ACTIVE_JOBS: 'free:1000000,pro:1000000,enterprise:1000000',
  TIER_MAX_ACTIVE_BATCH_JOBS: 'free:1000000,pro:1000000,enterprise:1000000',
  TIER_BATCH_BACKLOG_PER_SLOT: 'free:1000000,pro:1000000,enterprise:1000000',
  TIER_DAILY_QUOTA: 'free:1000000,pro:1000000,enterprise:1000000',
  TIER_BACKLOG_PER_SLOT: 'free:1000000,pro:1000000,enterprise:1000000',
  CREDIT_GRANTS: 'free:100000000,pro:100000000,enterprise:100000000',
  // The submission rate limit of the `gpu` queue is not under test here.
  GPU_SUBMITS_PER_SECOND: '1000',
};

/** The cheapest video: the prompt is what the simulator reads (markers such as [hang]). */
export const smallJob = (prompt: string) => ({ prompt, duration_seconds: 1, resolution: '480p' });

export type Api = ReturnType<typeof apiClient>;

/**
 * Submits `count` jobs, `concurrency` at a time; every one must be accepted. Returns their ids in submission order.
 * `priority`: the jobs' lane (unset: none is sent, which is interactive).
 */
export async function submitMany(
  api: Api,
  count: number,
  { prompt = 'a flood job', concurrency = 4, priority }: { prompt?: string; concurrency?: number; priority?: 'interactive' | 'batch' } = {},
): Promise<string[]> {
  const ids: string[] = new Array(count);
  let next = 0;
  const lanes = Array.from({ length: Math.min(concurrency, count) }, async () => {
    for (let i = next++; i < count; i = next++) {
      const res = await api.submit({ ...smallJob(`${prompt} #${i}`), ...(priority === undefined ? {} : { priority }) });
      if (res.status !== 202) throw new Error(`submit ${i}: ${res.status} ${res.text}`);
      ids[i] = res.body.id;
    }
  });
  await Promise.all(lanes);
  return ids;
}

/** Temporal's own count of tasks waiting on the stack's `gpu` queue (the server refreshes it every few seconds). */
export function waitForGpuBacklog(stack: Stack, count: number, timeoutMs = 60_000): Promise<number> {
  return eventually(
    async () => {
      const backlog = await gpuBacklog(stack.client, stack.config.worker.gpuTaskQueue);
      return backlog >= count ? backlog : undefined;
    },
    { timeoutMs, intervalMs: 250, what: `${count} tasks in the gpu backlog` },
  );
}

/** Whether the job's workflow has its GPU activity scheduled in Temporal (waiting for a slot, or running). */
async function gpuTaskScheduled(stack: Stack, jobId: string): Promise<boolean> {
  const { raw } = await stack.client.workflow.getHandle(jobId).describe();
  return (raw.pendingActivities ?? []).some((activity) => activity.activityType?.name === 'runGeneration');
}

/**
 * The jobs whose GPU task has left Temporal's backlog: taken by a dispatcher (started), or taken and handed back (a
 * later attempt). While every slot is held shut, none should be: the backlog is Temporal's, not ours.
 */
export async function gpuTasksTaken(stack: Stack, jobIds: string[]): Promise<string[]> {
  const taken = await Promise.all(
    jobIds.map(async (id) => {
      const { raw } = await stack.client.workflow.getHandle(id).describe();
      const gpu = (raw.pendingActivities ?? []).find((activity) => activity.activityType?.name === 'runGeneration');
      return gpu?.state === temporal.api.enums.v1.PendingActivityState.PENDING_ACTIVITY_STATE_SCHEDULED && gpu.attempt === 1 ? undefined : id;
    }),
  );
  return taken.filter((id) => id !== undefined);
}

/** Waits until every job's GPU task is in Temporal (checked per workflow: the backlog count lags by seconds). */
export async function waitForGpuTasks(stack: Stack, jobIds: string[], timeoutMs = 120_000): Promise<void> {
  let pending = [...jobIds];
  await eventually(
    async () => {
      const still: string[] = [];
      for (let i = 0; i < pending.length; i += 20) {
        const batch = pending.slice(i, i + 20);
        const scheduled = await Promise.all(batch.map((id) => gpuTaskScheduled(stack, id).catch(() => false)));
        batch.forEach((id, j) => !scheduled[j] && still.push(id));
      }
      pending = still;
      return pending.length === 0 ? true : undefined;
    },
    { timeoutMs, intervalMs: 100, what: `the GPU tasks of ${jobIds.length} jobs to be scheduled` },
  );
}

/**
 * Occupies `slots` GPU slots with jobs that run until released, so a backlog can build in Temporal before dispatch
 * starts. release() ends them on the backend (as canceled), which frees the slots at once.
 */
export async function holdSlots(stack: Stack, slots: number): Promise<{ release(): void }> {
  const { apiKey } = await stack.createUser('enterprise');
  const api = apiClient(stack.apiUrl, apiKey);
  const tag = randomBytes(3).toString('hex');
  const ids = await submitMany(api, slots, { prompt: `gate ${tag} [hang]` });
  const backendIds = await eventually(
    async () => {
      const jobs = ids.flatMap((id) => stack.simulator.simulator.engine.list(`${id}:`));
      const running = jobs.filter((job) => job.status === 'running');
      return running.length === slots ? running.map((job) => job.id) : undefined;
    },
    { what: `${slots} gate jobs running` },
  );
  // And running in the projection (the dispatcher writes it once the backend answered the submit): until then the gate
  // jobs still read queued, and would count in the queue positions of the jobs behind them.
  await eventually(
    async () => {
      const statuses = await Promise.all(ids.map(async (id) => (await api.get(id)).body.status));
      return statuses.every((status) => status === 'running') ? true : undefined;
    },
    { what: `${slots} gate jobs running in the projection` },
  );
  return {
    release() {
      for (const id of backendIds) stack.simulator.simulator.engine.cancel(id);
    },
  };
}

/** The backend's record of the given jobs (first attempts), in dispatch order. */
export function runsOf(stack: Stack, jobIds: Iterable<string>): BackendRun[] {
  const wanted = new Set(jobIds);
  return backendRuns(stack.simulator.simulator.engine.list()).filter((run) => wanted.has(run.jobId));
}

/** Labels (e.g. user names) of the given jobs in the order the GPU queue dispatched them. */
export function dispatchOrder(stack: Stack, owners: Map<string, string>): string[] {
  return runsOf(stack, owners.keys()).map((run) => owners.get(run.jobId)!);
}

export function ownersOf(groups: Record<string, string[]>): Map<string, string> {
  const owners = new Map<string, string>();
  for (const [label, ids] of Object.entries(groups)) for (const id of ids) owners.set(id, label);
  return owners;
}

/** Waits until every one of the jobs has ended on the backend. */
export function waitForBackendEnds(stack: Stack, jobIds: string[], timeoutMs = 120_000): Promise<BackendRun[]> {
  return eventually(
    async () => {
      const runs = runsOf(stack, jobIds);
      return runs.length >= jobIds.length && runs.every((run) => run.completedAt !== null) ? runs : undefined;
    },
    { timeoutMs, intervalMs: 200, what: `${jobIds.length} jobs to end on the backend` },
  );
}

/** The admin API's capacity endpoint. */
export function capacityAdmin(stack: Stack) {
  const call = async (method: 'GET' | 'PUT', body?: unknown) => {
    const res = await fetch(`${stack.apiUrl}/admin/capacity`, {
      method,
      headers: { authorization: `Bearer ${stack.adminApiKey}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (res.status !== 200) throw new Error(`${method} /admin/capacity: ${res.status} ${await res.text()}`);
    return (await res.json()) as { capacity: number; admin_capacity: number | null; backend_capacity: number | null; leased_slots: number; running_jobs: number };
  };
  return { get: () => call('GET'), set: (capacity: number | null) => call('PUT', { capacity }) };
}
