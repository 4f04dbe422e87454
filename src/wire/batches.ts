import { z } from 'zod';
import type { BatchRow } from '../db/schema';
import { isoString } from '../lib/iso-time';
import { responseComponents } from './resources';

/** The wire contract of /v1/batches, in one place (the OpenAPI document is generated from these). */

/** Items one batch may hold. */
export const MAX_BATCH_ITEMS = 500;

/**
 * A batch's body. Each item is a submit body (POST /v1/generations), checked one by one so a bad item's 400 names its
 * index (src/api/batch-submit.ts): here an item is only an object.
 */
export const createBatchBody = z
  .object({
    items: z
      .array(z.record(z.string(), z.unknown()).meta({ description: 'a submit body, as POST /v1/generations takes it (CreateGenerationRequest)' }))
      .min(1, 'a batch needs at least one item')
      .max(MAX_BATCH_ITEMS, `a batch holds at most ${MAX_BATCH_ITEMS} items`),
  })
  .strict();

export const listBatchesQuery = z
  .object({
    limit: z.coerce.number().int().min(1).max(100).default(20),
    cursor: z.string().max(200).optional(),
  })
  .strict();

const timestamp = z.iso.datetime().meta({ description: 'ISO 8601 time, UTC', examples: ['2025-01-01T12:00:00.000Z'] });

export const BATCH_STATUSES = ['in_progress', 'canceling', 'completed', 'canceled'] as const;

export const batchResource = z
  .object({
    id: z.string().meta({ examples: ['batch_5d1c...'] }),
    object: z.literal('batch'),
    status: z.enum(BATCH_STATUSES).meta({
      description: 'in_progress while an item is queued or running (canceling once a cancel was asked); completed (or canceled) once every item ended',
    }),
    total: z.int().min(1),
    counts: z
      .object({
        queued: z.int().min(0),
        running: z.int().min(0),
        succeeded: z.int().min(0),
        failed: z.int().min(0),
        canceled: z.int().min(0),
        expired: z.int().min(0),
      })
      .meta({ description: "the items by status; they add up to total" }),
    created_at: timestamp,
    completed_at: timestamp.nullable().meta({ description: 'when the last item ended' }),
  })
  .meta({ description: 'A batch of generations admitted together; its items are generations carrying its id as batch_id.' });
export type BatchResource = z.infer<typeof batchResource>;

export const batchList = z.object({
  data: z.array(batchResource),
  has_more: z.boolean(),
  next_cursor: z.string().nullable().meta({ description: 'pass as `cursor` for the next page; null on the last' }),
});

/** What a batch.completed webhook carries. */
export const batchWebhookEvent = z.object({ type: z.literal('batch.completed'), timestamp, data: batchResource });

responseComponents.Batch = batchResource;
responseComponents.BatchList = batchList;
responseComponents.BatchWebhookEvent = batchWebhookEvent;

export function batchStatus(row: Pick<BatchRow, 'completedAt' | 'cancelRequestedAt'>): BatchResource['status'] {
  if (row.completedAt === null) return row.cancelRequestedAt === null ? 'in_progress' : 'canceling';
  return row.cancelRequestedAt === null ? 'completed' : 'canceled';
}

export function toBatchResource(row: BatchRow) {
  return {
    id: row.id,
    object: 'batch' as const,
    status: batchStatus(row),
    total: row.total,
    counts: { queued: row.queued, running: row.running, succeeded: row.succeeded, failed: row.failed, canceled: row.canceled, expired: row.expired },
    created_at: isoString(row.createdAt),
    completed_at: row.completedAt === null ? null : isoString(row.completedAt),
  } satisfies BatchResource;
}
