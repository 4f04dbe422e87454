import type { BackendJob } from '../src/backend/types';
import { parseBackendClientKey } from '../src/domain/generation';

/**
 * Figures of GPU scheduling, computed from the backend's own record of our jobs (submission, start and end times): who
 * was dispatched in which order, how fairly, how busy the slots were and how fast a freed slot was handed on. Pure; used
 * by the fairness benchmark and the tests.
 */
export interface BackendRun {
  jobId: string;
  /** When the dispatcher submitted it: the moment of dispatch. */
  submittedAt: number;
  /** null while it waits in the backend's own queue. */
  startedAt: number | null;
  completedAt: number | null;
}

/** Our jobs as the backend saw them, in order of submission (first attempts and retries alike). */
export function backendRuns(jobs: BackendJob[]): BackendRun[] {
  return jobs
    .map((job) => ({
      jobId: parseBackendClientKey(job.client_key)?.jobId ?? job.client_key,
      submittedAt: Date.parse(job.created_at),
      startedAt: job.started_at === null ? null : Date.parse(job.started_at),
      completedAt: job.completed_at === null ? null : Date.parse(job.completed_at),
    }))
    .sort((a, b) => a.submittedAt - b.submittedAt);
}

/** Jain's fairness index: 1 when every party got the same, 1/n when one got everything. */
export function jainIndex(allocations: number[]): number {
  const sum = allocations.reduce((s, x) => s + x, 0);
  const squares = allocations.reduce((s, x) => s + x * x, 0);
  return squares === 0 ? 1 : (sum * sum) / (allocations.length * squares);
}

/** Nearest-rank percentile (p in 0..100) of a non-empty list. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))];
}

/** Most of our jobs the backend had at once (from submission to end: a job queued inside the backend counts too). */
export function maxInFlight(runs: BackendRun[]): number {
  return Math.max(0, ...inFlightAtSubmissions(runs).map((s) => s.inFlight));
}

/** For each run, how many of our jobs the backend had right after it was submitted (itself included). */
export function inFlightAtSubmissions(runs: BackendRun[]): Array<{ run: BackendRun; inFlight: number }> {
  return runs.map((run) => ({
    run,
    inFlight: runs.filter((o) => o.submittedAt <= run.submittedAt && (o.completedAt === null || o.completedAt > run.submittedAt)).length,
  }));
}

/**
 * Slot handoffs: for each run that ended within [from, to], the time until the next submission (each submission answers
 * one end, in time order). Meaningful while a backlog waits, so every freed slot should be taken at once.
 */
export function handoffs(runs: BackendRun[], from: number, to: number): number[] {
  const ends = runs.map((r) => r.completedAt).filter((t): t is number => t !== null && t >= from && t <= to).sort((a, b) => a - b);
  const submissions = runs.map((r) => r.submittedAt).sort((a, b) => a - b);
  const gaps: number[] = [];
  let next = 0;
  for (const end of ends) {
    while (next < submissions.length && submissions[next] < end) next++;
    if (next >= submissions.length) break;
    gaps.push(submissions[next] - end);
    next++;
  }
  return gaps;
}

/** Share of slot time in [from, to] that runs kept busy, against `capacity` slots. */
export function utilisation(runs: BackendRun[], capacity: number, from: number, to: number): number {
  if (to <= from || capacity <= 0) return 0;
  const busy = runs.reduce((sum, r) => (r.startedAt === null ? sum : sum + Math.max(0, Math.min(r.completedAt ?? to, to) - Math.max(r.startedAt, from))), 0);
  return busy / (capacity * (to - from));
}
