import type { Sql } from '../db/client';
import { runTag } from '../domain/generation';

/**
 * Provider jobs no attempt follows. A provider without an idempotency key (Replicate, fal, Veo) can hold a job of ours
 * that an unanswered submit created: the attempt's retry submitted again (or adopted it: GenerationBackend.findSubmitted).
 * Its webhook still names the attempt (the client key in the URL), so the callback route asks here whether the job it
 * names is the one the attempt follows, and owes a cancel for one that is not (sent by the dispatchers' cancel sweeper,
 * src/dispatch/backend-health.ts).
 */

/** What the projection says of an attempt's backend job (the row the GPU activity writes when a backend accepts one). */
export interface AttemptRecord {
  /** ISO 8601, to the millisecond (as the workflow wrote it). */
  runOpenedAt: string | null;
  /** The latest attempt a backend accepted. */
  attempt: number;
  backendJobId: string | null;
  ended: boolean;
}

/**
 * - `follows`: the job is the attempt's own, or the attempt has not been accepted yet (a webhook faster than the
 *   acceptance: its job is not known here yet, and is taken as the attempt's, as before);
 * - `orphan`: the attempt follows another job;
 * - `over`: the attempt has ended or moved on (a later attempt was accepted, another run, the job ended or is gone).
 */
export type CallbackOwnership = 'follows' | 'orphan' | 'over';

export function callbackOwnership(record: AttemptRecord | null, key: { run: string; attempt: number }, backendJobId: string): CallbackOwnership {
  if (!record || record.ended || !record.runOpenedAt || runTag(record.runOpenedAt) !== key.run) return 'over';
  if (record.attempt > key.attempt) return 'over';
  if (record.attempt < key.attempt || record.backendJobId === null) return 'follows';
  return record.backendJobId === backendJobId ? 'follows' : 'orphan';
}

export async function attemptRecord(sql: Sql, jobId: string): Promise<AttemptRecord | null> {
  const [row] = await sql<{ run_opened_at: string | null; attempt: number; backend_job_id: string | null; ended: boolean }[]>`
    select to_char(run_opened_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') as run_opened_at, attempt, backend_job_id, status in ('succeeded', 'failed', 'canceled') as ended from generations where id = ${jobId}`;
  return row ? { runOpenedAt: row.run_opened_at, attempt: row.attempt, backendJobId: row.backend_job_id, ended: row.ended } : null;
}

/** A backend job nobody follows: its cancel is owed (idempotent), sent once the backend answers. */
export async function oweBackendCancel(sql: Sql, { backend, backendJobId, jobId }: { backend: string; backendJobId: string; jobId: string }): Promise<void> {
  await sql`insert into backend_cancels (backend, backend_job_id, job_id) values (${backend}, ${backendJobId}, ${jobId}) on conflict do nothing`;
}
