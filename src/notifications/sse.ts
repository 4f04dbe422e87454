import type { Request, Response } from 'express';
import { ApiError } from '../wire/errors';
import { sseStreamsClosed } from '../lib/metrics';
import type { GenerationEvent, GenerationEventHub, Resync } from './event-hub';
import type { RevokedKeyWatch } from './key-revocations';
import { QueuePositionWatch, type QueuePositionChange, type QueuePositionPoller } from './queue-watch';

/** Server-Sent Events for generation changes: one `id:`/`event:`/`data:` block per event, comments as keep-alives. */

/** What a client resumes from: the Last-Event-ID header (sent by EventSource on reconnect) or `?last_event_id=`. */
export function lastEventId(req: Request): number | undefined {
  const query = req.query.last_event_id;
  const raw = req.get('last-event-id') ?? (typeof query === 'string' ? query : undefined);
  if (raw === undefined || raw === '') return undefined;
  if (!/^\d{1,15}$/.test(raw.trim())) throw new ApiError(400, 'invalid_last_event_id', 'Last-Event-ID: must be an event id this API sent');
  return Number(raw.trim());
}

export function formatEvent(event: GenerationEvent): string {
  const data = { event_id: event.id, type: event.type, ...event.payload, created_at: event.createdAt.toISOString() };
  return `id: ${event.id}\nevent: ${event.type}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** A queue position carries no id: it is not replayed on resume, the next poll sends the current one. */
export function formatQueuePosition(change: QueuePositionChange): string {
  const data = { type: 'generation.queue_position', generation_id: change.jobId, queue_position: change.position, eta_seconds: change.etaSeconds };
  return `event: generation.queue_position\ndata: ${JSON.stringify(data)}\n\n`;
}

/**
 * The client's Last-Event-ID was not replayed: it must list its generations again. Carries the id the stream goes on
 * from, so a reconnect resumes from here rather than from the old id.
 */
export function formatResync(resync: Resync, asked: number): string {
  const message =
    resync.reason === 'resume_window_exceeded'
      ? 'the events after Last-Event-ID are too many or too old to replay; list your generations again, then follow this stream'
      : 'Last-Event-ID names no event of yours; list your generations again, then follow this stream';
  const data = { type: 'stream.resync_required', reason: resync.reason, last_event_id: asked, message };
  return `id: ${resync.cursor}\nevent: stream.resync_required\ndata: ${JSON.stringify(data)}\n\n`;
}

/** The last event of a stream the server ends. */
export function formatStreamClosed(reason: 'api_key_revoked'): string {
  const data = { type: 'stream.closed', reason, message: 'the API key this stream was opened with was revoked' };
  return `event: stream.closed\ndata: ${JSON.stringify(data)}\n\n`;
}

/** The parts of the API process every stream shares. */
export interface EventStreams {
  hub: GenerationEventHub;
  revocations: RevokedKeyWatch;
  /** Where queued jobs' positions come from. */
  queue?: QueuePositionPoller;
  keepAliveMs: number;
  /** A client that reads nothing for this long while events wait for it is disconnected. */
  slowClientMs: number;
}

export interface EventStreamOptions {
  userId: string;
  /** The API key the stream was opened with: the stream ends when it is revoked. */
  apiKeyId: string;
  /** Only this job's events. */
  jobId?: string;
}

/**
 * Streams a user's (or one job's) events until the client goes away or its key is revoked. Writes respect backpressure:
 * once the socket's buffer is full nothing more is read or written for the stream until it drains, and a client that
 * stays behind for `slowClientMs` is disconnected (it resumes with Last-Event-ID when it comes back).
 */
export async function streamGenerationEvents(req: Request, res: Response, streams: EventStreams, { userId, apiKeyId, jobId }: EventStreamOptions): Promise<void> {
  const after = lastEventId(req);
  const { hub, revocations, queue, keepAliveMs, slowClientMs } = streams;
  const watch = queue ? new QueuePositionWatch(jobId) : undefined;
  const stream = { open: false, closed: false, blocked: false, endedBy: undefined as string | undefined, cleanups: [] as Array<() => void> };
  const ready = () => stream.open && !stream.blocked && !stream.closed;
  let slowClient: NodeJS.Timeout | undefined;
  const write = (chunk: string) => {
    if (stream.closed || stream.endedBy || res.writableEnded) return;
    if (res.write(chunk)) return;
    stream.blocked = true;
    slowClient ??= setTimeout(() => end('slow_client'), slowClientMs);
  };
  const end = (reason: 'slow_client' | 'api_key_revoked') => {
    if (stream.closed || stream.endedBy) return;
    stream.endedBy = reason;
    sseStreamsClosed.inc({ reason });
    // A client that is behind would not read a last event: it is cut off; one that reads is told why.
    if (reason === 'api_key_revoked' && !stream.blocked) {
      res.end(formatStreamClosed(reason));
      return;
    }
    res.destroy();
  };
  // Listening before subscribing: a client gone during the subscribe must not leave a subscription behind.
  res.on('close', () => {
    if (stream.open && !stream.endedBy) sseStreamsClosed.inc({ reason: 'client_gone' });
    stream.closed = true;
    clearTimeout(slowClient);
    for (const cleanup of stream.cleanups) cleanup();
  });
  const subscription = await hub.subscribe(
    { userId, jobId, after },
    {
      send: (event) => {
        watch?.observe(event);
        write(formatEvent(event));
      },
      ready,
    },
  );
  stream.cleanups.push(() => subscription.close());
  if (stream.closed) return subscription.close();
  res.status(200).set({
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    // Proxies such as nginx would otherwise hold events back.
    'x-accel-buffering': 'no',
  });
  res.flushHeaders();
  stream.open = true;
  res.on('drain', () => {
    stream.blocked = false;
    clearTimeout(slowClient);
    slowClient = undefined;
    subscription.resume();
  });
  // Reconnect quickly after a drop; the client resumes from its Last-Event-ID.
  write('retry: 1000\n\n');
  if (subscription.resync) write(formatResync(subscription.resync, after ?? 0));
  subscription.start();
  const keepAlive = setInterval(() => {
    // A stream with writes waiting needs no keep-alive.
    if (!stream.blocked) write(': keep-alive\n\n');
    subscription.catchUp();
  }, keepAliveMs);
  stream.cleanups.push(() => clearInterval(keepAlive));
  stream.cleanups.push(revocations.watch(apiKeyId, () => end('api_key_revoked')));
  if (watch && queue) {
    stream.cleanups.push(queue.watch(userId, watch, (changes) => changes.forEach((change) => write(formatQueuePosition(change))), ready));
  }
}
