import type { Sql } from '../db/client';

/** Postgres channel on which the API announces "a callback arrived for this backend job". */
export const BACKEND_JOB_CHANNEL = 'backend_job_events';

/**
 * Lets a GPU activity hear its backend job's callback at once, through Postgres LISTEN, instead of waiting for its next
 * poll: the GPU slot is then free within milliseconds of the backend finishing.
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
