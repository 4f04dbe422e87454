import { isGrpcServiceError, WorkflowExecutionAlreadyStartedError, type Client } from '@temporalio/client';
import type { Config } from '../config';
import type { GenerationRow } from '../db/schema';
import type { UnstartedJob } from '../db/submissions';
import { BATCH_PRIORITY, priorityOf, type GenerationInput, type GenerationRequest } from '../domain/generation';
import { gpuTimeFactor } from '../domain/pricing';
import { SA_STATUS, SA_TIER, SA_USER_ID } from '../domain/search-attributes';
import { GENERATION_WORKFLOW_TYPE } from './generation';
import { withTemporalDeadline } from '../lib/temporal-deadline';

/**
 * The one way a job's workflow is started — by the submit, by its relay, by the reconciler, by a cancel — and the one
 * way its input is built, from the submit or, for a job kept while Temporal was away, from what Postgres holds of it.
 */

/** What the workflow input needs beyond the request: who, the job id, and the pool and weight it was admitted with. */
export interface InputSource {
  jobId: string;
  userId: string;
  tier: string;
  request: GenerationRequest;
  acceptedAt: Date;
  /** The gpu queue entry's pool and weight (admission wrote them); the configured ones when there is none. */
  gpuTaskQueue?: string;
  fairnessWeight?: number;
  /** Temporal priority key of the job's tasks (domain/generation.ts firstJobPriority); unset: its lane's default level. */
  priorityKey?: number;
  /** The job a rerun repeats. */
  retryOf?: string;
}

/** The server's queue limit for the request's lane (MAX_QUEUE_MS, or MAX_BATCH_QUEUE_MS for a batch job). */
export function queueLimitMs(config: Config, request: Pick<GenerationRequest, 'priority'>): number {
  return priorityOf(request) === 'batch' ? config.generation.maxBatchQueueMs : config.generation.maxQueueMs;
}

export function generationInput(config: Config, source: InputSource): GenerationInput {
  const { generation } = config;
  const scale = gpuTimeFactor(source.request);
  // An interactive job's tasks take the server's default level unless raised; a batch job's are always below them.
  const priorityKey = source.priorityKey ?? (priorityOf(source.request) === 'batch' ? BATCH_PRIORITY : undefined);
  return {
    jobId: source.jobId,
    userId: source.userId,
    tier: source.tier,
    request: source.request,
    acceptedAt: source.acceptedAt.toISOString(),
    settings: {
      gpuTaskQueue: source.gpuTaskQueue ?? config.worker.gpuTaskQueue,
      fairnessWeight: source.fairnessWeight ?? generation.tierWeights[source.tier] ?? 1,
      ...(priorityKey === undefined ? {} : { priorityKey }),
      heartbeatTimeoutMs: generation.heartbeatTimeoutMs,
      maxAttempts: generation.maxAttempts,
      retryBackoffMs: generation.retryBackoffMs,
      maxQueueMs: Math.min(queueLimitMs(config, source.request), (source.request.max_queue_seconds ?? Infinity) * 1000),
      maxRunMs: Math.min(Math.round(generation.maxRunMs * scale), (source.request.max_run_seconds ?? Infinity) * 1000),
      expectedRunMs: Math.round(generation.expectedRunMs * scale),
      lean: true,
      ...(config.routing.enabled ? { routing: true as const } : { opensAtSlot: true as const, endsOnHeardSuccess: true as const }),
    },
    ...(source.retryOf === undefined ? {} : { retryOf: source.retryOf }),
  };
}

/** A kept job's input, rebuilt from its queued row and queue entry (src/db/submissions.ts readUnstartedJob). */
export function unstartedJobInput(config: Config, job: UnstartedJob): GenerationInput {
  return generationInput(config, {
    jobId: job.jobId,
    userId: job.userId,
    tier: job.tier,
    request: requestFromRow(job),
    acceptedAt: job.acceptedAt,
    gpuTaskQueue: job.gpuTaskQueue ?? undefined,
    fairnessWeight: job.fairnessWeight ?? undefined,
  });
}

/** The request as the queued row keeps it (prompt, and rowParams in params): what a kept job's input and a rerun need. */
export function requestFromRow(row: Pick<GenerationRow, 'prompt' | 'params'>): GenerationRequest {
  const p = row.params as Partial<GenerationRequest>;
  return {
    prompt: row.prompt,
    duration_seconds: p.duration_seconds ?? 5,
    resolution: p.resolution ?? '720p',
    aspect_ratio: p.aspect_ratio ?? '16:9',
    seed: p.seed ?? null,
    webhook_url: p.webhook_url ?? null,
    metadata: p.metadata ?? {},
    ...(p.priority === 'batch' ? { priority: 'batch' as const } : {}),
    ...(typeof p.input_reference === 'string' ? { input_reference: p.input_reference } : {}),
    ...(typeof p.remix_of === 'string' ? { remix_of: p.remix_of } : {}),
  };
}

/**
 * Starts the job's workflow under its id. Idempotent: USE_EXISTING meets a running one, REJECT_DUPLICATE refuses to run
 * an ended one again (and that refusal means the job was started: resolved). Throws what Temporal answered otherwise.
 */
export async function startGeneration(client: Client, config: Config, input: GenerationInput): Promise<void> {
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
    if (err instanceof WorkflowExecutionAlreadyStartedError) return; // it exists (and has ended): started
    throw err;
  }
}

// Codes that say Temporal was not there to answer (down, restarting, unreachable, too slow or too busy), as opposed to an
// answer that refuses the start (a missing namespace, an invalid request), which trying again will not change.
// gRPC status codes: DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, UNAVAILABLE.
const UNREACHABLE = new Set([4, 8, 14]);

/** Whether a failed call failed for want of Temporal (the SDK's ServiceError carries the gRPC error as its cause). */
export function isTemporalUnreachable(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 3; e = (e as { cause?: unknown }).cause, depth++) {
    if (isGrpcServiceError(e)) return UNREACHABLE.has(e.code);
  }
  return false;
}
