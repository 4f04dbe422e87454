import { parseOr400 } from './validation';
import { createGenerationBody } from '../wire/requests';
import { createHash, randomBytes } from 'node:crypto';
import type { Client } from '@temporalio/client';
import type { Config } from '../config';
import type { Db } from '../db/client';
import { getGeneration, insertQueued, queuedRow } from '../db/projection';
import type { GenerationRow, UserRow } from '../db/schema';
import { priorityOf, type GenerationInput, type GenerationRequest } from '../domain/generation';
import { creditsFor, gpuTimeFactor } from '../domain/pricing';
import { renderRequestOf } from '../domain/render-request';
import { reservedCredits } from '../domain/routing';
import { undoSubmission } from './admission-store';
import { ApiError } from '../wire/errors';
import { generationInput, isTemporalUnreachable, queueLimitMs, startGeneration } from '../contracts/generation-start';
import type { StartRelay } from './start-relay';

export interface SubmitDeps {
  db: Db;
  client: Client;
  config: Config;
  /** Starts the workflows of submits kept while Temporal could not be reached. */
  relay: StartRelay;
}

export interface SubmitResult {
  generation: GenerationRow;
  /** True when this answer replays an earlier submit with the same Idempotency-Key. */
  replayed: boolean;
}

/** A request's own time limits must lie within the server's: a 400 that names the limit otherwise. */
export function checkTimeLimits(
  config: Config,
  request: Pick<GenerationRequest, 'max_queue_seconds' | 'max_run_seconds' | 'duration_seconds' | 'resolution' | 'priority'>,
): void {
  const queueLimit = Math.floor(queueLimitMs(config, request) / 1000);
  if (request.max_queue_seconds !== undefined && request.max_queue_seconds > queueLimit) {
    throw new ApiError(400, 'invalid_request', `max_queue_seconds: at most ${queueLimit} for the ${priorityOf(request)} lane (this server's limit)`);
  }
  const runLimit = Math.floor((config.generation.maxRunMs * gpuTimeFactor(request)) / 1000);
  if (request.max_run_seconds !== undefined && request.max_run_seconds > runLimit) {
    throw new ApiError(400, 'invalid_request', `max_run_seconds: at most ${runLimit} for this duration and resolution (this server's limit)`);
  }
}

/** The job id for (user, idempotency key): every retry of one submit names the same workflow. */
export function jobIdFor(userId: string, idempotencyKey: string | undefined): string {
  if (!idempotencyKey) return `gen_${randomBytes(16).toString('hex')}`;
  return `gen_${createHash('sha256').update(`${userId}\n${idempotencyKey}`).digest('hex').slice(0, 32)}`;
}

/** A rerun's hash covers the job it repeats: one key cannot name a submit and a rerun, or reruns of two jobs. */
function requestHash(request: GenerationRequest, retryOf: string | undefined): string {
  return createHash('sha256').update(JSON.stringify(retryOf === undefined ? request : { ...request, retry_of: retryOf })).digest('hex');
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
  /** The job a rerun repeats (POST /v1/generations/:id/retry); unset for a submit. */
  retryOf?: string;
}

/**
 * The credits admission reserves for a request: its price (its lane's), and with several backends the price on the
 * dearest that can render it: the one that runs it charges its own (routing.ts).
 */
export const reservedPrice = (config: Config, request: GenerationRequest): number =>
  reservedCredits(creditsFor(request, config.generation.pricing), config.backend.backends, renderRequestOf(request));

export function describeSubmission(config: Config, user: UserRow, request: GenerationRequest, idempotencyKey: string | undefined, retryOf?: string): Submission {
  return {
    user,
    request,
    idempotencyKey,
    jobId: jobIdFor(user.id, idempotencyKey),
    requestHash: requestHash(request, retryOf),
    credits: reservedPrice(config, request),
    acceptedAt: new Date(),
    ...(retryOf === undefined ? {} : { retryOf }),
  };
}

/**
 * An admitted submit (its key, credits, queue entry and queued row are written): starts the workflow (USE_EXISTING, so
 * concurrent duplicates meet one workflow) and answers with the row as admission wrote it. Never waits for generation.
 * Admission committed is a promise: when Temporal cannot be reached the job is kept and the relay starts it later. Only a
 * start Temporal refuses (it answered, and no retry will change that) undoes the admission, so the client's retry starts
 * afresh.
 */
export async function startAdmitted(deps: SubmitDeps, submission: Submission, { priorityKey }: { priorityKey?: number } = {}): Promise<GenerationRow> {
  const input = submissionInput(deps.config, submission, submission.acceptedAt, priorityKey);
  try {
    await startOrKeep(deps, input);
  } catch (err) {
    await undoSubmission(deps.db, submission.jobId);
    throw notStarted(err);
  }
  return queuedRow(input);
}

/**
 * A submit whose Idempotency-Key was taken before: the same body replays the first answer; another body is refused. A
 * row no workflow has opened yet may belong to a first submit still starting, one kept while Temporal is away, one whose
 * API died before the start, or a job whose first run waits for its GPU slot (where it opens its row): the workflow is
 * started again (idempotent: Temporal answers with the run already there) or kept, so a replay never answers for a job
 * that will not run.
 */
export async function replaySubmission(deps: SubmitDeps, submission: Submission, earlier: { requestHash: string; acceptedAt: Date }): Promise<SubmitResult> {
  if (earlier.requestHash !== submission.requestHash) {
    throw new ApiError(422, 'idempotency_key_reused', 'this Idempotency-Key was already used with a different request body');
  }
  const { db, config } = deps;
  const existing = await getGeneration(db, submission.user.id, submission.jobId);
  if (existing && existing.runOpenedAt !== null) return { generation: existing, replayed: true };
  const input = submissionInput(config, submission, earlier.acceptedAt);
  try {
    await startOrKeep(deps, input);
  } catch (err) {
    throw notStarted(err);
  }
  return { generation: existing ?? (await insertQueued(db, input)) ?? queuedRow(input), replayed: true };
}

function submissionInput(config: Config, { user, jobId, request, retryOf }: Submission, acceptedAt: Date, priorityKey?: number): GenerationInput {
  return generationInput(config, { jobId, userId: user.id, tier: user.tier, request, acceptedAt, priorityKey, retryOf });
}

/** Starts the job's workflow or, when Temporal cannot be reached (or is known not to be), keeps it for the relay. */
export async function startOrKeep({ client, config, relay }: SubmitDeps, input: GenerationInput): Promise<void> {
  if (relay.temporalUnreachable) {
    relay.keep(input);
    return;
  }
  try {
    await startGeneration(client, config, input);
  } catch (err) {
    if (!isTemporalUnreachable(err)) throw err;
    relay.keep(input, { unreachable: true });
  }
}

function notStarted(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  return new ApiError(503, 'temporal_unavailable', 'Temporal refused to start the job; nothing was kept, retry shortly', undefined, { 'Retry-After': '5' });
}

/** A submit body as the request it stands for (400 on a bad one). */
export function parseGenerationRequest(body: unknown, config: Config): GenerationRequest {
  const { priority, ...parsed } = parseOr400(createGenerationBody, body ?? {});
  // Only the batch lane is written: an interactive request is the request as it was before lanes (its hash included).
  const request = { ...parsed, ...(priority === 'batch' ? { priority } : {}), metadata: Object.fromEntries(Object.entries(parsed.metadata).sort()) };
  checkTimeLimits(config, request);
  return request;
}
