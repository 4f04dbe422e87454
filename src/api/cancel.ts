import { WorkflowNotFoundError, type Client } from '@temporalio/client';
import type { Config } from '../config';
import type { Db } from '../db/client';
import { getGeneration } from '../db/projection';
import type { GenerationRow, UserRow } from '../db/schema';
import { isTerminal } from '../domain/generation-state';
import { cancelGenerationSignal } from '../contracts/generation';
import { readUnstartedJob } from '../db/submissions';
import { ApiError, notFound } from '../wire/errors';
import { startGeneration, unstartedJobInput } from '../contracts/generation-start';
import { withTemporalDeadline } from '../lib/temporal-deadline';

/**
 * Asks a job's workflow to cancel it. Works queued (the GPU task leaves the backlog) and running (the backend job is
 * aborted); a second cancel is harmless; a job that already succeeded or failed is a 409.
 */
export async function cancelGeneration({ db, client, config }: { db: Db; client: Client; config: Config }, user: UserRow, jobId: string): Promise<GenerationRow> {
  const row = await getGeneration(db, user.id, jobId);
  if (!row) throw notFound('generation');
  if (row.status === 'canceled') return row;
  if (isTerminal(row.status)) throw alreadyFinished(row);
  try {
    await deliverCancel({ db, client, config }, jobId);
  } catch (err) {
    if (!(err instanceof WorkflowNotFoundError)) {
      throw new ApiError(503, 'temporal_unavailable', 'the cancellation could not be delivered; retry shortly', undefined, { 'Retry-After': '2' });
    }
    // The workflow has just ended: answer with how it ended.
    const ended = (await getGeneration(db, user.id, jobId)) ?? row;
    if (ended.status === 'canceled') return ended;
    throw alreadyFinished(ended);
  }
  return (await getGeneration(db, user.id, jobId)) ?? row;
}

export async function deliverCancel({ db, client, config }: { db: Db; client: Client; config: Config }, jobId: string): Promise<void> {
  const signal = () => withTemporalDeadline(client, () => client.workflow.getHandle(jobId).signal(cancelGenerationSignal, { reason: 'requested by the user' }));
  try {
    await signal();
  } catch (err) {
    // A kept submit whose relay has not started it yet: start it (idempotent), then cancel it like any queued job.
    const kept = err instanceof WorkflowNotFoundError ? await readUnstartedJob(db, jobId) : undefined;
    if (!kept) throw err;
    await startGeneration(client, config, unstartedJobInput(config, kept));
    await signal();
  }
}

function alreadyFinished(row: GenerationRow): ApiError {
  return new ApiError(409, 'generation_already_finished', `the generation has already ${row.status === 'succeeded' ? 'succeeded' : 'ended'}`, {
    status: row.status,
  });
}
