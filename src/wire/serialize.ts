import type { KeysetPosition } from '../db/keyset';
import type { ListedGeneration } from '../db/projection';
import { isoString, isStorableTime } from '../lib/iso-time';
import type { GenerationRow } from '../db/schema';
import { priorityOf, type GenerationRequest } from '../domain/generation';
import type { GenerationResource } from './resources';

/** A queued job's place (src/api/queue-position.ts computes it): 1 is next to get a GPU; the ETA is null until known. */
export interface QueueInfo {
  position: number;
  etaSeconds: number | null;
}

// Typed so a non-null column serializes as `string`, as the documented schema says. A list row's times are text already.
const iso = <D extends Date | string | null>(d: D) => (d === null ? null : typeof d === 'string' ? d : isoString(d)) as D extends Date | string ? string : string | null;

/** A projection row as the API shows it (snake_case); `queue` is the job's place while queued (src/api/queue-position.ts). */
export function toGenerationResource(row: GenerationRow | ListedGeneration, queue?: QueueInfo) {
  const params = row.params as Partial<GenerationRequest>;
  return {
    id: row.id,
    object: 'generation' as const,
    status: row.status,
    prompt: row.prompt,
    duration_seconds: params.duration_seconds,
    resolution: params.resolution,
    aspect_ratio: params.aspect_ratio,
    seed: params.seed ?? null,
    webhook_url: params.webhook_url ?? null,
    metadata: params.metadata ?? {},
    priority: priorityOf(params),
    input_reference: params.input_reference ?? null,
    remix_of: params.remix_of ?? null,
    attempt: row.attempt,
    progress: row.progress,
    backend_job_id: row.backendJobId,
    backend: row.backend ?? null,
    failed_over_from: row.failedOverFrom ?? null,
    video_url: row.videoUrl,
    error: row.error ?? null,
    queue_position: row.status === 'queued' ? (queue?.position ?? null) : null,
    eta_seconds: row.status === 'queued' ? (queue?.etaSeconds ?? null) : null,
    created_at: iso(row.createdAt),
    started_at: iso(row.startedAt),
    completed_at: iso(row.completedAt),
    updated_at: iso(row.updatedAt),
    retry_of: row.retryOf ?? null,
    batch_id: row.batchId ?? null,
  } satisfies GenerationResource;
}

/** The opaque keyset cursor: the (created_at, id) of a page's last row, its time exact to the microsecond. */
export function encodeCursor(position: KeysetPosition): string {
  return Buffer.from(JSON.stringify([position.createdAt, position.id])).toString('base64url');
}

/** ISO 8601 UTC with up to six digits of a second: what encodeCursor writes (and, earlier, milliseconds only). */
const CURSOR_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z$/;

export function decodeCursor(cursor: string): KeysetPosition | null {
  try {
    const [time, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8')) as unknown[];
    // Only what this API could have issued: a storable id, a time Postgres can read.
    if (typeof id !== 'string' || id.includes('\u0000') || typeof time !== 'string' || !CURSOR_TIME.test(time)) return null;
    // A field out of range (Feb 30, 24:00) rolls over in a Date but is refused by Postgres: the text must be its own time.
    const date = new Date(time);
    if (!isStorableTime(date) || date.toISOString().slice(0, 19) !== time.slice(0, 19)) return null;
    return { createdAt: time, id };
  } catch {
    return null;
  }
}
