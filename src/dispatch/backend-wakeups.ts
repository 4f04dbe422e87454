import type { Sql } from '../db/client';

/**
 * Postgres channel on which the API announces "a callback arrived for this backend job" (the payload is the backend
 * job's id), and the generation workflow "stop this attempt" (the payload is attemptStopKey's).
 */
export const BACKEND_JOB_CHANNEL = 'backend_job_events';

/** The wake-up key of a workflow's "stop attempt N": the GPU activity running it aborts its backend job. */
export function attemptStopKey(jobId: string, attempt: number): string {
  return `stop:${jobId}/${attempt}`;
}

/**
 * Lets a GPU activity hear its backend job's callback at once, through Postgres LISTEN, instead of waiting for its next
 * poll: the GPU slot is then free within milliseconds of the backend finishing. The same wake-up carries a workflow's
 * cancel or deadline to the activity, which would otherwise hear it only in a heartbeat's answer (one every ~40 s).
 */
export class BackendWakeups {
  private readonly waiters = new Map<string, Set<() => void>>();
  private unlisten?: () => Promise<void>;

  constructor(private readonly sql: Sql) {}

  async start(): Promise<void> {
    const { unlisten } = await this.sql.listen(BACKEND_JOB_CHANNEL, (backendJobId) => this.wake(backendJobId));
    this.unlisten = unlisten;
  }

  async stop(): Promise<void> {
    await this.unlisten?.();
  }

  /** Resolves `woken` when woken for `key`; `cancel` stops listening (call it once done). */
  once(key: string): { woken: Promise<void>; cancel: () => void } {
    let cancel = () => undefined as void;
    const woken = new Promise<void>((resolve) => {
      const waiters = this.waiters.get(key) ?? new Set<() => void>();
      this.waiters.set(key, waiters);
      const onWake = () => {
        cancel();
        resolve();
      };
      cancel = () => {
        waiters.delete(onWake);
        if (waiters.size === 0 && this.waiters.get(key) === waiters) this.waiters.delete(key);
      };
      waiters.add(onWake);
    });
    return { woken, cancel };
  }

  /** Resolves true when woken for this job, false after `ms`. */
  wait(backendJobId: string, ms: number): Promise<boolean> {
    return new Promise((resolve) => {
      const waiters = this.waiters.get(backendJobId) ?? new Set<() => void>();
      this.waiters.set(backendJobId, waiters);
      const done = (woken: boolean) => {
        clearTimeout(timer);
        waiters.delete(onWake);
        if (waiters.size === 0) this.waiters.delete(backendJobId);
        resolve(woken);
      };
      const onWake = () => done(true);
      const timer = setTimeout(() => done(false), ms);
      waiters.add(onWake);
    });
  }

  private wake(backendJobId: string): void {
    for (const onWake of [...(this.waiters.get(backendJobId) ?? [])]) onWake();
  }
}

export async function announceBackendJobEvent(sql: Sql, backendJobId: string): Promise<void> {
  await sql.notify(BACKEND_JOB_CHANNEL, backendJobId);
}
