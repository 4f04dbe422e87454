import type { BackendJob } from '../src/backend/types';

interface Waiter {
  resolve: (job: BackendJob) => void;
  reject: (error: unknown) => void;
}

/** Callers waiting for jobs to end (the synchronous generate call); each wait can be abandoned with an AbortSignal. */
export class EndWaiters {
  private readonly byJob = new Map<string, Set<Waiter>>();

  /** Rejects with the signal's reason when aborted. */
  wait(jobId: string, signal?: AbortSignal): Promise<BackendJob> {
    if (signal?.aborted) return Promise.reject(signal.reason);
    return new Promise((resolve, reject) => {
      const set = this.byJob.get(jobId) ?? new Set<Waiter>();
      this.byJob.set(jobId, set);
      const onAbort = () => {
        set.delete(waiter);
        if (set.size === 0 && this.byJob.get(jobId) === set) this.byJob.delete(jobId);
        reject(signal?.reason);
      };
      const settle = () => signal?.removeEventListener('abort', onAbort);
      const waiter: Waiter = {
        resolve: (job) => (settle(), resolve(job)),
        reject: (error) => (settle(), reject(error)),
      };
      set.add(waiter);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  resolve(jobId: string, job: BackendJob): void {
    const set = this.byJob.get(jobId);
    this.byJob.delete(jobId);
    for (const waiter of set ?? []) waiter.resolve(job);
  }

  rejectAll(error: unknown): void {
    for (const set of this.byJob.values()) for (const waiter of set) waiter.reject(error);
    this.byJob.clear();
  }
}
