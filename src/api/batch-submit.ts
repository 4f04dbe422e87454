import { WorkflowNotFoundError } from '@temporalio/client';
import { getBatch, markCancelRequested, unendedItemIds, unstartedItemIds } from '../db/batches';
import type { Sql } from '../db/client';
import type { BatchRow, UserRow } from '../db/schema';
import { generationInput } from '../contracts/generation-start';
import type { GenerationInput, GenerationRequest } from '../domain/generation';
import type { InputChecks } from './generation-inputs';
import type { Logger } from '../lib/logger';
import { ApiError, notFound } from '../wire/errors';
import { admitBatch, admittedBatchHeaders, admittedLanes, describeBatch, undoBatch, type BatchSubmission } from './batch-admission';
import { deliverCancel } from './cancel';
import { idempotencyKeysTaken } from './admission-store';
import type { QueuePositions } from './queue-position';
import { parseGenerationRequest, startOrKeep, type SubmitDeps } from './submit';
import { assertWebhookUrlAllowed, webhookLookup } from './webhook-endpoints-routes';

/**
 * POST /v1/batches: up to 500 submit bodies admitted together or not at all, under one Idempotency-Key. The admission
 * writes everything in one statement (src/api/batch-admission.ts); then each item's workflow is started as a submit's
 * is (src/api/submit.ts startOrKeep: kept for the start relay while Temporal cannot be reached, and started by the
 * reconciler from its row if this process dies first), so nothing admitted is lost.
 */
export type BatchDeps = SubmitDeps & { sql: Sql; queue: QueuePositions; starts: BatchStarts; logger: Logger; inputs: InputChecks };

/** Workflow starts in flight at once for one batch: enough to overlap the round trips, few enough to share Temporal. */
const START_CONCURRENCY = 32;
/** Cancel signals in flight at once for one batch. */
const CANCEL_CONCURRENCY = 32;

/** Runs `each` over `items`, at most `limit` at a time; the first failure is thrown once all started ones settled. */
async function inParallel<T>(items: T[], limit: number, each: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failure: { err: unknown } | undefined;
  const lane = async () => {
    while (next < items.length && !failure) {
      const item = items[next++];
      try {
        await each(item);
      } catch (err) {
        failure ??= { err };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  if (failure) throw failure.err;
}

/**
 * The workflow starts of admitted batches' items, after the answer, in this process: each batch's items in order, at
 * most START_CONCURRENCY at once. A batch being started here is not started again by a replay of it.
 */
export class BatchStarts {
  private readonly starting = new Set<string>();

  constructor(private readonly deps: SubmitDeps & { logger: Logger }) {}

  isStarting(batchId: string): boolean {
    return this.starting.has(batchId);
  }

  startInBackground(batchId: string, inputs: GenerationInput[]): void {
    if (inputs.length === 0 || this.starting.has(batchId)) return;
    this.starting.add(batchId);
    const began = Date.now();
    // A process that stops meanwhile leaves the rest to the reconciler (their rows are queued and quiet).
    void inParallel(inputs, START_CONCURRENCY, async (input) => {
      try {
        await startOrKeep(this.deps, input);
      } catch (err) {
        this.deps.logger.error({ err, jobId: input.jobId, batchId }, 'Temporal refused to start a batch item; left to the reconciler');
      }
    })
      .then(() => this.deps.logger.info({ batchId, items: inputs.length + 1, startMs: Date.now() - began }, 'batch items started'))
      .finally(() => this.starting.delete(batchId));
  }
}

/** An item as a submit reads it, or a 400 naming the item's index (details.index) and the item's own error. */
function itemRequest(deps: BatchDeps, body: unknown, index: number): GenerationRequest {
  try {
    return parseGenerationRequest(body, deps.config);
  } catch (err) {
    throw badItem(err, index);
  }
}

function badItem(err: unknown, index: number): unknown {
  if (!(err instanceof ApiError) || err.status !== 400) return err;
  const issues = (err.details as { issues?: unknown } | undefined)?.issues;
  return new ApiError(400, 'invalid_batch_item', `items[${index}].${err.message}`, { index, code: err.code, ...(issues === undefined ? {} : { issues }) });
}

/** Every item's webhook_url through the SSRF guard, each distinct URL once. */
async function checkWebhookUrls(deps: BatchDeps, items: GenerationRequest[]): Promise<void> {
  const checked = new Set<string>();
  for (const [index, item] of items.entries()) {
    const url = item.webhook_url;
    if (url === null || checked.has(url)) continue;
    try {
      await assertWebhookUrlAllowed('webhook_url', url, deps.config.notifications.webhookAllowedHosts, webhookLookup(deps.config));
    } catch (err) {
      throw badItem(err, index);
    }
    checked.add(url);
  }
}

/**
 * Every item's input image and remixed job (generation-inputs.ts), each distinct one once and one at a time, so the first
 * refused names its item: a refused image is 400 invalid_batch_item (details.code invalid_input_reference), a remix
 * refusal the submit's own 404 or 409 code; each with `items[i].` before its message and the index in details.index.
 */
async function checkItemInputs(deps: BatchDeps, user: UserRow, items: GenerationRequest[]): Promise<void> {
  const checked = new Set<string>();
  for (const [index, item] of items.entries()) {
    const unchecked = {
      ...(item.input_reference !== undefined && !checked.has(`image:${item.input_reference}`) ? { input_reference: item.input_reference } : {}),
      ...(item.remix_of !== undefined && !checked.has(`remix:${item.remix_of}`) ? { remix_of: item.remix_of } : {}),
    };
    if (Object.keys(unchecked).length === 0) continue;
    try {
      await deps.inputs.check(user, unchecked, `items[${index}].`);
    } catch (err) {
      if (!(err instanceof ApiError) || err.status === 429) throw err;
      const details = { index, ...(err.details as object | undefined) };
      if (err.status === 400) throw new ApiError(400, 'invalid_batch_item', err.message, { ...details, code: err.code });
      throw new ApiError(err.status, err.code, err.message, details, err.headers);
    }
    if (unchecked.input_reference !== undefined) checked.add(`image:${unchecked.input_reference}`);
    if (unchecked.remix_of !== undefined) checked.add(`remix:${unchecked.remix_of}`);
  }
}

/** Validates the items (a bad one is a 400 naming its index) and describes the batch. */
export async function describeBatchRequest(deps: BatchDeps, user: UserRow, rawItems: unknown[], idempotencyKey: string | undefined): Promise<BatchSubmission> {
  const items = rawItems.map((body, index) => itemRequest(deps, body, index));
  await checkWebhookUrls(deps, items);
  // A retry of a batch whose key is taken is replayed (or refused by its hash) by the admission: its inputs are not checked again.
  if (items.some((item) => item.input_reference !== undefined || item.remix_of !== undefined)) {
    const replay = idempotencyKey !== undefined && (await idempotencyKeysTaken(deps.sql, user.id, [idempotencyKey])).has(idempotencyKey);
    if (!replay) await checkItemInputs(deps, user, items);
  }
  return describeBatch(deps.config, user, items, idempotencyKey);
}

const itemInput = (deps: BatchDeps, batch: BatchSubmission, index: number): GenerationInput =>
  generationInput(deps.config, { jobId: batch.jobIds[index], userId: batch.user.id, tier: batch.user.tier, request: batch.items[index], acceptedAt: batch.acceptedAt });

function notStarted(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  return new ApiError(503, 'temporal_unavailable', 'Temporal refused to start the batch; nothing was kept, retry shortly', undefined, { 'Retry-After': '5' });
}

export interface SubmittedBatch {
  batch: BatchRow;
  replayed: boolean;
  headers: Record<string, string>;
}

/**
 * Admits the batch whole and starts its items' workflows. The first item is started before the answer: a start Temporal
 * refuses (it answered; no retry would change that) undoes the whole batch, none of which runs, and the client's retry
 * starts afresh. The others are started after the answer (BatchStarts), many at a time: the admission committed them
 * (their rows read `queued`), and 500 starts take seconds. One refused then, or left by a process that died, stays
 * queued for the reconciler, as a kept submit does; one that cannot reach Temporal goes to the start relay.
 */
export async function submitBatch(deps: BatchDeps, batch: BatchSubmission): Promise<SubmittedBatch> {
  const admission = await admitBatch(deps, batch);
  if (admission.outcome === 'replay') return replayBatch(deps, batch, admission);
  try {
    await startOrKeep(deps, itemInput(deps, batch, 0));
  } catch (err) {
    await undoBatch(deps.db, batch.batchId);
    throw notStarted(err);
  }
  const weight = deps.config.generation.tierWeights[batch.user.tier] ?? 1;
  if (admission.xid !== null) {
    for (const { priority, jobs } of admittedLanes(batch)) {
      deps.queue.noteAdmitted({ xid: admission.xid, userId: batch.user.id, tier: batch.user.tier, weight, createdAt: batch.acceptedAt, jobs, priority });
    }
  }
  deps.starts.startInBackground(batch.batchId, batch.jobIds.slice(1).map((_, i) => itemInput(deps, batch, i + 1)));
  const row = await getBatch(deps.db, batch.user.id, batch.batchId);
  if (!row) throw new Error(`batch ${batch.batchId} missing right after its admission`);
  return { batch: row, replayed: false, headers: admittedBatchHeaders(deps.config, batch, admission) };
}

/**
 * A batch whose Idempotency-Key was taken before: the same body answers the batch, and starts again (idempotently, after
 * the answer) any item no workflow has opened, unless this process is starting them still: its first submit may have
 * died, or run on another API process. Another body, or a key a submit used, is refused.
 */
async function replayBatch(deps: BatchDeps, batch: BatchSubmission, earlier: { earlierHash: string; earlierId: string }): Promise<SubmittedBatch> {
  if (earlier.earlierHash !== batch.requestHash || earlier.earlierId !== batch.batchId) {
    throw new ApiError(422, 'idempotency_key_reused', 'this Idempotency-Key was already used with a different request body');
  }
  const row = await getBatch(deps.db, batch.user.id, batch.batchId);
  if (!row) throw new ApiError(409, 'batch_in_progress', 'this batch is being undone; retry shortly', undefined, { 'Retry-After': '1' });
  if (!deps.starts.isStarting(batch.batchId)) {
    const unstarted = await unstartedItemIds(deps.sql, batch.batchId);
    // The first submit's time: the rows carry it, and a kept item is started with the input it was admitted with.
    const accepted = { ...batch, acceptedAt: row.createdAt };
    deps.starts.startInBackground(batch.batchId, batch.jobIds.flatMap((id, i) => (unstarted.has(id) ? [itemInput(deps, accepted, i)] : [])));
  }
  return { batch: row, replayed: true, headers: {} };
}

/**
 * Cancels every item that has not ended, as POST /v1/generations/:id/cancel would each (a kept item is started first,
 * then canceled). The batch reads `canceling` until its last item ended, then `canceled`. A completed batch is a 409.
 */
export async function cancelBatch(deps: BatchDeps, user: UserRow, batchId: string): Promise<BatchRow> {
  const marked = await markCancelRequested(deps.db, user.id, batchId);
  if (!marked) {
    const row = await getBatch(deps.db, user.id, batchId);
    if (!row) throw notFound('batch');
    if (row.cancelRequestedAt === null) throw new ApiError(409, 'batch_already_completed', 'every item of the batch has already ended', { status: 'completed' });
    return row;
  }
  const items = await unendedItemIds(deps.sql, batchId);
  try {
    await inParallel(items, CANCEL_CONCURRENCY, async (jobId) => {
      try {
        await deliverCancel(deps, jobId);
      } catch (err) {
        // The item's workflow has just ended (or was never kept): nothing left to cancel.
        if (!(err instanceof WorkflowNotFoundError)) throw err;
      }
    });
  } catch {
    throw new ApiError(503, 'temporal_unavailable', 'some cancellations could not be delivered; retry shortly (a cancel is idempotent)', undefined, { 'Retry-After': '2' });
  }
  return (await getBatch(deps.db, user.id, batchId)) ?? marked;
}
