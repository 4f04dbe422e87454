import { z } from 'zod';
import { PRIORITIES } from '../domain/generation';
import { GENERATION_STATUSES } from '../domain/generation-state';
import { isStorableTime } from '../lib/iso-time';

/** The wire contract of /v1/generations, in one place (the OpenAPI document is generated from these). */
export const createGenerationBody = z
  .object({
    prompt: z.string().trim().min(1, 'must not be empty').max(4000, 'must be at most 4000 characters'),
    duration_seconds: z.number().int().min(1).max(60).default(5),
    resolution: z.enum(['480p', '720p', '1080p']).default('720p'),
    aspect_ratio: z.enum(['16:9', '9:16', '1:1']).default('16:9'),
    seed: z.number().int().min(0).max(2 ** 32 - 1).nullable().default(null),
    webhook_url: z.string().url().max(2000).nullable().default(null),
    metadata: z
      .record(z.string().max(64), z.string().max(500))
      .refine((m) => Object.keys(m).length <= 16, 'at most 16 keys')
      .default({}),
    // Absent unless given, so a request without them hashes as before (idempotency keys of earlier submits still match).
    max_queue_seconds: z
      .number()
      .int()
      .min(1)
      .optional()
      .meta({ description: "Longest the job may wait for a GPU slot; past it the job ends `expired` (code `queue_timeout`), never charged. At most the server's limit for the job's lane (default 1800 interactive, 86400 batch)." }),
    max_run_seconds: z
      .number()
      .int()
      .min(1)
      .optional()
      .meta({ description: "Longest the generation may run once the backend accepted it; past it the job fails with `generation_timeout`. At most the server's limit for the request's duration and resolution." }),
    priority: z
      .enum(PRIORITIES)
      .optional()
      .meta({
        description:
          'The lane. `interactive` (the default) goes first; `batch` waits while interactive jobs of any user wait, costs less (BATCH_PRICE_FACTOR), may wait longer (MAX_BATCH_QUEUE_MS) and counts against its own active-job limits. Users share each lane fairly.',
      }),
    input_reference: z
      .url({ protocol: /^https?$/, error: 'must be an http or https URL' })
      .max(2048, 'must be at most 2048 characters')
      .optional()
      .meta({
        description:
          'An image to start the video from (image-to-video): a public http(s) URL of an `image/*` of at most 10 MB. Checked before the job is admitted (its address through the SSRF guard, then a HEAD, or a GET when HEAD is refused); a refusal is `400 invalid_input_reference` whose `details.reason` is `refused_address`, `unreachable`, `not_an_image` or `too_large`.',
        examples: ['https://example.com/first-frame.png'],
      }),
    remix_of: z
      .string()
      .min(1)
      .max(100)
      .optional()
      .meta({
        description:
          'The id of one of your succeeded generations to remix: the backend starts from its video. A job that is not yours or does not exist is `404 remix_source_not_found`; one that has not succeeded is `409 remix_source_not_succeeded`.',
        examples: ['gen_3f2a...'],
      }),
  })
  .strict();

export const idempotencyKeyHeader = z
  .string()
  .min(1, 'must not be empty')
  .max(255, 'must be at most 255 characters')
  .regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces');

/** An ISO 8601 time in years 1–9999 (Postgres refuses year 0 and six-digit years). */
const listTime = z.iso.datetime({ offset: true }).refine((value) => isStorableTime(new Date(value)), 'must be a time between the years 1 and 9999');

export const listGenerationsQuery = z
  .object({
    status: z.enum(GENERATION_STATUSES).optional(),
    created_after: listTime.optional(),
    created_before: listTime.optional(),
    limit: z.coerce.number().int().min(1).max(100).default(20),
    cursor: z.string().max(200).optional(),
    batch_id: z.string().min(1).max(100).optional().meta({ description: 'only the items of this batch (POST /v1/batches)' }),
  })
  .strict();

export const createUserBody = z
  .object({
    name: z.string().trim().min(1).max(200),
    tier: z.string().min(1),
  })
  .strict();
