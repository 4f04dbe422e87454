import { createHash, randomBytes } from 'node:crypto';
import { and, eq } from 'drizzle-orm';
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { Config } from '../config';
import type { Db } from '../db/client';
import { getGeneration, insertQueued } from '../db/projection';
import { idempotencyKeys, type GenerationRow, type UserRow } from '../db/schema';
import { InsufficientCreditsError, reserveCredits, undoReservation } from '../credits/ledger';
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

/**
 * Accepts a generation: claims the idempotency key, starts the workflow (USE_EXISTING, so concurrent duplicates meet one
 * workflow), and writes the queued projection row. Never waits for generation.
 */
export async function submitGeneration(
  { db, client, config }: SubmitDeps,
  user: UserRow,
  request: GenerationRequest,
  idempotencyKey: string | undefined,
): Promise<SubmitResult> {
  const jobId = jobIdFor(user.id, idempotencyKey);
  const claim = await claimSubmission(db, user, jobId, request, idempotencyKey);
  if (claim.kind === 'replay' && claim.existing) return { generation: claim.existing, replayed: true };
  // A replay without a row: the first submit is still starting (or died before its row). Starting again is idempotent.

  const input = generationInput(config, user, jobId, request, claim.acceptedAt);
  try {
    await startWorkflow(client, config, input);
  } catch (err) {
    if (claim.kind === 'new') await abandonSubmission(db, user.id, jobId, idempotencyKey);
    throw err;
  }
  await insertQueued(db, input);
  const generation = await getGeneration(db, user.id, jobId);
  if (!generation) throw new Error(`projection row ${jobId} missing right after insert`);
  return { generation, replayed: claim.kind === 'replay' };
}

type Claim = { kind: 'new'; acceptedAt: Date } | { kind: 'replay'; acceptedAt: Date; existing: GenerationRow | undefined };

/**
 * In one transaction: claim the idempotency key and reserve the job's credits. A second submit with the same key and
 * body is a replay (no new reservation); with another body it is refused.
 */
async function claimSubmission(db: Db, user: UserRow, jobId: string, request: GenerationRequest, idempotencyKey: string | undefined): Promise<Claim> {
  const hash = requestHash(request);
  const acceptedAt = new Date();
  const earlier = await db.transaction(async (tx) => {
    if (idempotencyKey) {
      const claimed = await tx
        .insert(idempotencyKeys)
        .values({ userId: user.id, key: idempotencyKey, requestHash: hash, jobId, createdAt: acceptedAt })
        .onConflictDoNothing()
        .returning();
      if (claimed.length === 0) {
        const [row] = await tx
          .select()
          .from(idempotencyKeys)
          .where(and(eq(idempotencyKeys.userId, user.id), eq(idempotencyKeys.key, idempotencyKey)));
        return row;
      }
    }
    try {
      await reserveCredits(tx, user.id, jobId, creditsFor(request));
    } catch (err) {
      if (err instanceof InsufficientCreditsError) {
        throw new ApiError(402, 'insufficient_credits', err.message, { needed: err.needed, available: err.available });
      }
      throw err;
    }
    return undefined;
  });
  if (!earlier) return { kind: 'new', acceptedAt };
  if (earlier.requestHash !== hash) {
    throw new ApiError(422, 'idempotency_key_reused', 'this Idempotency-Key was already used with a different request body');
  }
  return { kind: 'replay', acceptedAt: earlier.createdAt, existing: await getGeneration(db, user.id, jobId) };
}

/** Nothing was accepted: release the key and the reservation, so the client's retry starts afresh. */
async function abandonSubmission(db: Db, userId: string, jobId: string, idempotencyKey: string | undefined): Promise<void> {
  await db.transaction(async (tx) => {
    await undoReservation(tx, jobId);
    if (idempotencyKey) {
      await tx.delete(idempotencyKeys).where(and(eq(idempotencyKeys.userId, userId), eq(idempotencyKeys.key, idempotencyKey)));
    }
  });
}

function generationInput(config: Config, user: UserRow, jobId: string, request: GenerationRequest, acceptedAt: Date): GenerationInput {
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
