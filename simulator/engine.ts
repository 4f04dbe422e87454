import { randomUUID } from 'node:crypto';
import type { BackendJob, BackendJobError, BackendJobStatus, BackendSubmitRequest } from '../src/backend/types';
import type { Logger } from '../src/lib/logger';
import { systemClock, type Clock, type Random, type TimerHandle } from './clock';
import type { SimulatorKnobs } from './knobs';
import { planRun, type RunPlan } from './outcome';
import { EndWaiters } from './waiters';

/**
 * The simulated GPU farm: a job store, a FIFO queue in front of `capacity` GPUs, and a timer per running job.
 * Knows nothing of HTTP; the app and the callback dispatcher listen to its events.
 */
export interface JobEvent {
  kind: 'started' | 'ended';
  job: BackendJob;
  callbackUrl: string | null;
}
export type JobEventListener = (event: JobEvent) => void;

export interface SubmitResult {
  job: BackendJob;
  /** false when the client_key already named a job. */
  created: boolean;
}

export interface EngineStats {
  submitted: number;
  running: number;
  queued: number;
  max_running_observed: number;
  succeeded: number;
  failed: number;
  canceled: number;
}

export interface SimulatorEngineOptions {
  knobs: SimulatorKnobs;
  clock?: Clock;
  random?: Random;
  newJobId?: () => string;
  logger?: Logger;
}

export class EngineClosedError extends Error {
  constructor() {
    super('the simulator is shutting down');
    this.name = 'EngineClosedError';
  }
}

interface JobRecord {
  id: string;
  request: BackendSubmitRequest;
  status: BackendJobStatus;
  createdAt: number;
  startedAt: number | null;
  completedAt: number | null;
  plan: RunPlan | null;
  /** Run time banked before the current stretch; outages stop the clock on a job. */
  elapsedMs: number;
  /** Clock time the current stretch began; null while queued, frozen or ended. */
  resumedAt: number | null;
  timer: TimerHandle | null;
  finalProgress: number;
  error: BackendJobError | null;
}

const HANG_PROGRESS_CAP = 0.99;

/** A job as the simulator answers it: the contract's fields, and what it started from besides its prompt, when anything. */
export type SimulatedJob = BackendJob & {
  inputs?: { input_reference: string | null; remix_of: { job_id: string; video_url: string } | null };
};

export class SimulatorEngine {
  private current: SimulatorKnobs;
  private readonly clock: Clock;
  private readonly random: Random;
  private readonly newJobId: () => string;
  private readonly logger?: Logger;
  private readonly jobs = new Map<string, JobRecord>();
  private readonly byClientKey = new Map<string, JobRecord>();
  private readonly queue: JobRecord[] = [];
  private readonly running = new Set<JobRecord>();
  private readonly listeners = new Set<JobEventListener>();
  private readonly waiters = new EndWaiters();
  private counters = { submitted: 0, maxRunning: 0, succeeded: 0, failed: 0, canceled: 0 };
  private closed = false;

  constructor(options: SimulatorEngineOptions) {
    this.current = { ...options.knobs };
    this.clock = options.clock ?? systemClock;
    this.random = options.random ?? Math.random;
    this.newJobId = options.newJobId ?? (() => `job_${randomUUID()}`);
    this.logger = options.logger;
  }

  get knobs(): SimulatorKnobs {
    return { ...this.current };
  }

  /** Applies new knobs at once: an outage freezes running jobs, its end resumes them; capacity changes start queued jobs. */
  updateKnobs(next: SimulatorKnobs): void {
    const wasOutage = this.current.outage;
    this.current = { ...next };
    if (!wasOutage && next.outage) for (const record of this.running) this.freeze(record);
    if (wasOutage && !next.outage) for (const record of this.running) this.resume(record);
    this.pump();
  }

  submit(request: BackendSubmitRequest): SubmitResult {
    if (this.closed) throw new EngineClosedError();
    const existing = this.byClientKey.get(request.client_key);
    if (existing) return { job: this.snapshot(existing), created: false };
    const record: JobRecord = {
      id: this.newJobId(),
      request: { ...request },
      status: 'queued',
      createdAt: this.clock.now(),
      startedAt: null,
      completedAt: null,
      plan: null,
      elapsedMs: 0,
      resumedAt: null,
      timer: null,
      finalProgress: 0,
      error: null,
    };
    this.jobs.set(record.id, record);
    this.byClientKey.set(request.client_key, record);
    this.queue.push(record);
    this.counters.submitted++;
    this.pump();
    return { job: this.snapshot(record), created: true };
  }

  get(id: string): SimulatedJob | undefined {
    const record = this.jobs.get(id);
    return record && this.snapshot(record);
  }

  /** Jobs in submission order, optionally only those whose client_key starts with the prefix. */
  list(clientKeyPrefix = ''): BackendJob[] {
    const jobs: BackendJob[] = [];
    for (const record of this.jobs.values()) {
      if (record.request.client_key.startsWith(clientKeyPrefix)) jobs.push(this.snapshot(record));
    }
    return jobs;
  }

  /** Cancels a queued or running job and frees its GPU; a terminal job is returned unchanged. undefined if unknown. */
  cancel(id: string): BackendJob | undefined {
    const record = this.jobs.get(id);
    if (!record) return undefined;
    if (record.status === 'queued') {
      this.queue.splice(this.queue.indexOf(record), 1);
      this.end(record, 'canceled', null, 0);
    } else if (record.status === 'running') {
      this.end(record, 'canceled', null, this.progress(record));
      this.pump();
    }
    return this.snapshot(record);
  }

  /** Resolves with the terminal job; rejects with the signal's reason if aborted, or EngineClosedError at shutdown. */
  waitForEnd(id: string, signal?: AbortSignal): Promise<BackendJob> {
    const record = this.jobs.get(id);
    if (!record) return Promise.reject(new Error(`unknown job ${id}`));
    if (record.completedAt !== null) return Promise.resolve(this.snapshot(record));
    if (this.closed) return Promise.reject(new EngineClosedError());
    return this.waiters.wait(id, signal);
  }

  onEvent(listener: JobEventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  stats(): EngineStats {
    return {
      submitted: this.counters.submitted,
      running: this.running.size,
      queued: this.queue.length,
      max_running_observed: this.counters.maxRunning,
      succeeded: this.counters.succeeded,
      failed: this.counters.failed,
      canceled: this.counters.canceled,
    };
  }

  /** Zeroes the counters; the high-water mark restarts from what is running now. */
  resetStats(): void {
    this.counters = { submitted: 0, maxRunning: this.running.size, succeeded: 0, failed: 0, canceled: 0 };
  }

  /**
   * A backend restart that kept nothing: every job is gone, with its timers and callbacks, and asking for one is a 404.
   * Returns how many were lost.
   */
  loseJobs(): number {
    const lost = this.jobs.size;
    for (const record of this.jobs.values()) this.freeze(record);
    this.jobs.clear();
    this.byClientKey.clear();
    this.queue.length = 0;
    this.running.clear();
    return lost;
  }

  /** Stops every timer and fails pending waits; jobs stay where they are. */
  close(): void {
    this.closed = true;
    for (const record of this.running) this.freeze(record);
    this.waiters.rejectAll(new EngineClosedError());
    this.listeners.clear();
  }

  /** Starts queued jobs, oldest first, while a GPU is free; none start during an outage. */
  private pump(): void {
    while (!this.closed && !this.current.outage && this.running.size < this.current.capacity && this.queue.length > 0) {
      const record = this.queue.shift() as JobRecord;
      record.status = 'running';
      record.startedAt = this.clock.now();
      record.plan = planRun(record.request.prompt, this.current, this.random);
      this.running.add(record);
      this.counters.maxRunning = Math.max(this.counters.maxRunning, this.running.size);
      this.resume(record);
      this.emit('started', record);
    }
  }

  private resume(record: JobRecord): void {
    if (this.closed) return;
    record.resumedAt = this.clock.now();
    const endAt = record.plan?.endAtMs;
    if (endAt === null || endAt === undefined) return; // a hanging job only ends by cancel
    record.timer = this.clock.setTimer(() => this.finish(record), Math.max(0, endAt - record.elapsedMs));
  }

  private freeze(record: JobRecord): void {
    record.elapsedMs = this.elapsed(record);
    record.resumedAt = null;
    if (record.timer !== null) this.clock.clearTimer(record.timer);
    record.timer = null;
  }

  private finish(record: JobRecord): void {
    record.timer = null;
    if (record.status !== 'running' || !record.plan) return;
    const error = record.plan.error;
    this.end(record, error ? 'failed' : 'succeeded', error, error ? this.progress(record) : 1);
    this.pump();
  }

  private end(record: JobRecord, status: 'succeeded' | 'failed' | 'canceled', error: BackendJobError | null, progress: number): void {
    if (record.status === 'running') this.freeze(record);
    this.running.delete(record);
    record.status = status;
    record.error = error;
    record.finalProgress = progress;
    record.completedAt = this.clock.now();
    this.counters[status]++;
    this.emit('ended', record);
    this.waiters.resolve(record.id, this.snapshot(record));
  }

  private elapsed(record: JobRecord): number {
    return record.elapsedMs + (record.resumedAt === null ? 0 : this.clock.now() - record.resumedAt);
  }

  private progress(record: JobRecord): number {
    if (record.status !== 'running' || !record.plan) return record.finalProgress;
    const cap = record.plan.endAtMs === null ? HANG_PROGRESS_CAP : 1;
    return Math.min(cap, this.elapsed(record) / record.plan.durationMs);
  }

  private emit(kind: JobEvent['kind'], record: JobRecord): void {
    const event: JobEvent = { kind, job: this.snapshot(record), callbackUrl: record.request.callback_url ?? null };
    for (const listener of this.listeners) {
      try {
        listener(event);
      } catch (err) {
        this.logger?.error({ err, jobId: record.id }, 'job event listener failed');
      }
    }
  }

  private snapshot(record: JobRecord): SimulatedJob {
    const iso = (ms: number) => new Date(ms).toISOString();
    return {
      id: record.id,
      client_key: record.request.client_key,
      status: record.status,
      progress: Math.round(this.progress(record) * 10_000) / 10_000,
      video_url: record.status === 'succeeded' ? `https://videos.sim.local/${record.id}.mp4` : null,
      error: record.error && { ...record.error },
      created_at: iso(record.createdAt),
      started_at: record.startedAt === null ? null : iso(record.startedAt),
      completed_at: record.completedAt === null ? null : iso(record.completedAt),
      // What the job started from, besides its prompt: an image (image-to-video) and the video it remixes. Only when given.
      ...(record.request.input_reference === undefined && record.request.remix_of === undefined
        ? {}
        : { inputs: { input_reference: record.request.input_reference ?? null, remix_of: record.request.remix_of ?? null } }),
    };
  }
}
