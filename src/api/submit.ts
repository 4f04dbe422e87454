import { createHash, randomBytes } from 'node:crypto';
import { and, eq } from 'drizzle-orm';
import { WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { Config } from '../config';
import type { Db } from '../db/client';
import { getGeneration, insertQueued } from '../db/projection';
import { idempotencyKeys, type GenerationRow, type UserRow } from '../db/schema';
import type { GenerationInput, GenerationRequest } from '../domain/generation';
import { SA_STATUS, SA_TIER, SA_USER_ID } from '../domain/search-attributes';
import { GENERATION_WORKFLOW_TYPE } from '../workflows/messages';
import { ApiError } from './errors';

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

const TEMPORAL_START_DEADLINE_MS = 5_000;

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
  const hash = requestHash(request);
  let acceptedAt = new Date();
  let replayed = false;
  let claimedKey = false;

  if (idempotencyKey) {
    const claimed = await db
      .insert(idempotencyKeys)
      .values({ userId: user.id, key: idempotencyKey, requestHash: hash, jobId, createdAt: acceptedAt })
      .onConflictDoNothing()
      .returning();
    claimedKey = claimed.length > 0;
    if (!claimedKey) {
      const [earlier] = await db
        .select()
        .from(idempotencyKeys)
        .where(and(eq(idempotencyKeys.userId, user.id), eq(idempotencyKeys.key, idempotencyKey)));
      if (earlier.requestHash !== hash) {
        throw new ApiError(422, 'idempotency_key_reused', 'this Idempotency-Key was already used with a different request body');
      }
      replayed = true;
      acceptedAt = earlier.createdAt;
      const existing = await getGeneration(db, user.id, jobId);
      if (existing) return { generation: existing, replayed };
      // The first submit is still starting (or died before its row): starting again is idempotent.
    }
  }

  const input: GenerationInput = {
    jobId,
    userId: user.id,
    tier: user.tier,
    request,
    acceptedAt: acceptedAt.toISOString(),
    settings: {
      gpuTaskQueue: config.worker.gpuTaskQueue,
      fairnessWeight: config.generation.tierWeights[user.tier] ?? 1,
      heartbeatTimeoutMs: config.generation.heartbeatTimeoutMs,
      maxAttempts: config.generation.maxAttempts,
      retryBackoffMs: config.generation.retryBackoffMs,
      maxRunMs: config.generation.maxRunMs,
    },
  };

  try {
    await client.withDeadline(Date.now() + TEMPORAL_START_DEADLINE_MS, () =>
      client.workflow.start(GENERATION_WORKFLOW_TYPE, {
        taskQueue: config.worker.generationTaskQueue,
        workflowId: jobId,
        args: [input],
        workflowIdConflictPolicy: 'USE_EXISTING',
        // A finished job is never run again under its id.
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        typedSearchAttributes: [
          { key: SA_USER_ID, value: user.id },
          { key: SA_TIER, value: user.tier },
          { key: SA_STATUS, value: 'queued' },
        ],
      }),
    );
  } catch (err) {
    if (!(err instanceof WorkflowExecutionAlreadyStartedError)) {
      // Nothing was accepted: release the key so the client's retry starts afresh.
      if (claimedKey) {
        await db.delete(idempotencyKeys).where(and(eq(idempotencyKeys.userId, user.id), eq(idempotencyKeys.key, idempotencyKey!)));
      }
      throw new ApiError(503, 'temporal_unavailable', 'the job could not be started; retry shortly', undefined, { 'Retry-After': '5' });
    }
  }

  await insertQueued(db, input);
  const generation = await getGeneration(db, user.id, jobId);
  if (!generation) throw new Error(`projection row ${jobId} missing right after insert`);
  return { generation, replayed };
}
