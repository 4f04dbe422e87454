import { createHash, randomBytes } from 'node:crypto';
import { and, eq } from 'drizzle-orm';
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { Config } from '../config';
import type { Db } from '../db/client';
import { getGeneration, insertQueued } from '../db/projection';
import { admissionReservations, gpuQueueEntries, idempotencyKeys, type GenerationRow, type UserRow } from '../db/schema';
import { undoReservation } from '../credits/ledger';
import type { GenerationInput, GenerationRequest } from '../domain/generation';
import { creditsFor, gpuTimeFactor } from '../domain/pricing';
import { SA_STATUS, SA_TIER, SA_USER_ID } from '../domain/search-attributes';
import { GENERATION_WORKFLOW_TYPE } from '../workflows/messages';
import { ApiError } from './errors';
import { withTemporalDeadline } from './temporal-deadline';

export interface SubmitDeps {
  db: Db;
  client: Client;
  config: Config;
}

export interface SubmitResult {
  generation: GenerationRow;
  /** True when this answer replays an earlier submit with the same Idempotency-Key. */
  replayed: boolean;
}

/** The job id for (user, idempotency key): every retry of one submit names the same workflow. */
export function jobIdFor(userId: string, idempotencyKey: string | undefined): string {
  if (!idempotencyKey) return `gen_${randomBytes(16).toString('hex')}`;
  return `gen_${createHash('sha256').update(`${userId}\n${idempotencyKey}`).digest('hex').slice(0, 32)}`;
}

function requestHash(request: GenerationRequest): string {
  return createHash('sha256').update(JSON.stringify(request)).digest('hex');
}

/** A submit before admission: its job id, what it costs, and the workflow input it will start with. */
export interface Submission {
  user: UserRow;
  request: GenerationRequest;
  idempotencyKey: string | undefined;
  jobId: string;
  requestHash: string;
  credits: number;
  acceptedAt: Date;
}

export function describeSubmission(user: UserRow, request: GenerationRequest, idempotencyKey: string | undefined): Submission {
  return {
    user,
    request,
    idempotencyKey,
    jobId: jobIdFor(user.id, idempotencyKey),
    requestHash: requestHash(request),
    credits: creditsFor(request),
    acceptedAt: new Date(),
  };
}

/**
 * An admitted submit (its key, credits and queue entry are written): starts the workflow (USE_EXISTING, so concurrent
 * duplicates meet one workflow) and writes the queued projection row, which is the answer. Never waits for generation.
 * When the workflow cannot be started, everything admission wrote is undone, so the client's retry starts afresh.
 */
export async function startAdmitted({ db, client, config }: SubmitDeps, submission: Submission): Promise<GenerationRow> {
  const input = generationInput(config, submission, submission.acceptedAt);
  try {
    await startWorkflow(client, config, input);
  } catch (err) {
    await abandonSubmission(db, submission);
    throw err;
  }
  return (await insertQueued(db, input)) ?? (await rowOf(db, submission));
}

/**
 * A submit whose Idempotency-Key was taken before: the same body replays the first answer; another body is refused. When
 * the first submit has no row yet (it is still starting, or died before its row), the workflow is started again, which
 * is idempotent, so a replay never answers for a job that does not exist. Undefined when the key is no longer taken.
 */
export async function replaySubmission(
  { db, client, config }: SubmitDeps,
  submission: Submission,
  earlier?: { requestHash: string; acceptedAt: Date },
): Promise<SubmitResult | undefined> {
  const { user, idempotencyKey } = submission;
  if (!idempotencyKey) throw new Error('a replay needs an Idempotency-Key');
  const first =
    earlier ??
    (await db
      .select({ requestHash: idempotencyKeys.requestHash, acceptedAt: idempotencyKeys.createdAt })
      .from(idempotencyKeys)
      .where(and(eq(idempotencyKeys.userId, user.id), eq(idempotencyKeys.key, idempotencyKey)))
      .then(([row]) => row));
  if (!first) return undefined; // released by a first submit that failed just now: this one is new after all
  if (first.requestHash !== submission.requestHash) {
    throw new ApiError(422, 'idempotency_key_reused', 'this Idempotency-Key was already used with a different request body');
  }
  const existing = await getGeneration(db, user.id, submission.jobId);
  if (existing) return { generation: existing, replayed: true };
  const input = generationInput(config, submission, first.acceptedAt);
  await startWorkflow(client, config, input);
  return { generation: (await insertQueued(db, input)) ?? (await rowOf(db, submission)), replayed: true };
}

async function rowOf(db: Db, { user, jobId }: Submission): Promise<GenerationRow> {
  const row = await getGeneration(db, user.id, jobId);
  if (!row) throw new Error(`projection row ${jobId} missing right after insert`);
  return row;
}

/** Nothing was accepted: undo what admission wrote (key, credits, queue entry, admission reservation), so a retry starts afresh. */
async function abandonSubmission(db: Db, { user, jobId, idempotencyKey }: Submission): Promise<void> {
  await db.transaction(async (tx) => {
    await undoReservation(tx, jobId);
    await tx.delete(gpuQueueEntries).where(eq(gpuQueueEntries.jobId, jobId));
    await tx.delete(admissionReservations).where(eq(admissionReservations.id, jobId));
    if (idempotencyKey) {
      await tx.delete(idempotencyKeys).where(and(eq(idempotencyKeys.userId, user.id), eq(idempotencyKeys.key, idempotencyKey)));
    }
  });
}

function generationInput(config: Config, { user, jobId, request }: Submission, acceptedAt: Date): GenerationInput {
  const { generation } = config;
  const scale = gpuTimeFactor(request);
  return {
    jobId,
    userId: user.id,
    tier: user.tier,
    request,
    acceptedAt: acceptedAt.toISOString(),
    settings: {
      gpuTaskQueue: config.worker.gpuTaskQueue,
      fairnessWeight: generation.tierWeights[user.tier] ?? 1,
      heartbeatTimeoutMs: generation.heartbeatTimeoutMs,
      maxAttempts: generation.maxAttempts,
      retryBackoffMs: generation.retryBackoffMs,
      maxQueueMs: generation.maxQueueMs,
      maxRunMs: Math.round(generation.maxRunMs * scale),
      expectedRunMs: Math.round(generation.expectedRunMs * scale),
    },
  };
}

async function startWorkflow(client: Client, config: Config, input: GenerationInput): Promise<void> {
  try {
    await withTemporalDeadline(client, () =>
      client.workflow.start(GENERATION_WORKFLOW_TYPE, {
        taskQueue: config.worker.generationTaskQueue,
        workflowId: input.jobId,
        args: [input],
        workflowIdConflictPolicy: 'USE_EXISTING',
        // A finished job is never run again under its id.
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        // Fair by user on the generation queue too (activities inherit it), so one user's flood of workflow tasks cannot
        // delay another user's job before its GPU task even exists.
        priority: { fairnessKey: input.userId, fairnessWeight: input.settings.fairnessWeight },
        typedSearchAttributes: [
          { key: SA_USER_ID, value: input.userId },
          { key: SA_TIER, value: input.tier },
          { key: SA_STATUS, value: 'queued' },
        ],
      }),
    );
  } catch (err) {
    if (err instanceof WorkflowExecutionAlreadyStartedError) return; // it exists (and has finished): fine
    throw new ApiError(503, 'temporal_unavailable', 'the job could not be started; retry shortly', undefined, { 'Retry-After': '5' });
  }
}
