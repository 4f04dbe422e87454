import { createHash, randomBytes } from 'node:crypto';
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { Config } from '../config';
import type { Db } from '../db/client';
import { getGeneration, insertQueued, queuedRow } from '../db/projection';
import type { GenerationRow, UserRow } from '../db/schema';
import { undoSubmission } from '../db/submissions';
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
 * An admitted submit (its key, credits, queue entry and queued row are written): starts the workflow (USE_EXISTING, so
 * concurrent duplicates meet one workflow) and answers with the row as admission wrote it. Never waits for generation.
 * When the workflow cannot be started, everything admission wrote is undone, so the client's retry starts afresh.
 */
export async function startAdmitted({ db, client, config }: SubmitDeps, submission: Submission, { priorityKey }: { priorityKey?: number } = {}): Promise<GenerationRow> {
  const input = generationInput(config, submission, submission.acceptedAt, priorityKey);
  try {
    await startWorkflow(client, config, input);
  } catch (err) {
    await undoSubmission(db, submission.jobId);
    throw err;
  }
  return queuedRow(input);
}

/**
 * A submit whose Idempotency-Key was taken before: the same body replays the first answer; another body is refused. A
 * row no workflow has opened yet may belong to a first submit still starting, or to one whose API died before the
 * start: the workflow is started again (idempotent), so a replay never answers for a job that will not run.
 */
export async function replaySubmission(
  { db, client, config }: SubmitDeps,
  submission: Submission,
  earlier: { requestHash: string; acceptedAt: Date },
): Promise<SubmitResult> {
  if (earlier.requestHash !== submission.requestHash) {
    throw new ApiError(422, 'idempotency_key_reused', 'this Idempotency-Key was already used with a different request body');
  }
  const existing = await getGeneration(db, submission.user.id, submission.jobId);
  if (existing && existing.runOpenedAt !== null) return { generation: existing, replayed: true };
  const input = generationInput(config, submission, earlier.acceptedAt);
  await startWorkflow(client, config, input);
  return { generation: existing ?? (await insertQueued(db, input)) ?? queuedRow(input), replayed: true };
}

export function generationInput(
  config: Config,
  { user, jobId, request }: Pick<Submission, 'user' | 'jobId' | 'request'>,
  acceptedAt: Date,
  priorityKey?: number,
): GenerationInput {
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
      ...(priorityKey === undefined ? {} : { priorityKey }),
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
        priority: { fairnessKey: input.userId, fairnessWeight: input.settings.fairnessWeight, priorityKey: input.settings.priorityKey },
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
