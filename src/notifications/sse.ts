import type { Request, Response } from 'express';
import { ApiError } from '../api/errors';
import type { EventSubscription, GenerationEvent, GenerationEventHub } from './event-hub';
import { QueuePositionWatch, type QueuePositionChange, type QueuePositionsOf } from './queue-watch';

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

export interface EventStreamOptions {
  hub: GenerationEventHub;
  userId: string;
  /** Only this job's events. */
  jobId?: string;
  keepAliveMs: number;
  /** Where queued jobs' positions come from, and how often they are polled. */
  queue?: { positionsOf: QueuePositionsOf; pollMs: number };
}

/** Streams a user's (or one job's) events until the client goes away. */
export async function streamGenerationEvents(req: Request, res: Response, { hub, userId, jobId, keepAliveMs, queue }: EventStreamOptions): Promise<void> {
  const after = lastEventId(req);
  const buffered: GenerationEvent[] = [];
  let open = false;
  const session: { closed: boolean; subscription?: EventSubscription; keepAlive?: NodeJS.Timeout; queuePoll?: NodeJS.Timeout } = { closed: false };
  const watch = queue ? new QueuePositionWatch(queue.positionsOf, userId, jobId) : undefined;
  // Listening before subscribing: a client gone during the subscribe must not leave a subscription behind.
  res.on('close', () => {
    session.closed = true;
    clearInterval(session.keepAlive);
    clearInterval(session.queuePoll);
    session.subscription?.close();
  });
  const send = (event: GenerationEvent) => {
    watch?.observe(event);
    if (!open) buffered.push(event);
    else if (!res.writableEnded) res.write(formatEvent(event));
  };
  const subscription = await hub.subscribe({ userId, jobId, after }, send);
  session.subscription = subscription;
  if (session.closed) {
    subscription.close();
    return;
  }
  res.status(200).set({
    'content-type': 'text/event-stream; charset=utf-8',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    // Proxies such as nginx would otherwise hold events back.
    'x-accel-buffering': 'no',
  });
  res.flushHeaders();
  // Reconnect quickly after a drop; the client resumes from its Last-Event-ID.
  res.write('retry: 1000\n\n');
  open = true;
  for (const event of buffered.splice(0)) res.write(formatEvent(event));
  session.keepAlive = setInterval(() => {
    res.write(': keep-alive\n\n');
    subscription.catchUp();
  }, keepAliveMs);
  if (watch && queue) {
    let polling = false;
    const pollQueue = async () => {
      if (polling || session.closed) return;
      polling = true;
      try {
        for (const change of await watch.poll()) if (!res.writableEnded) res.write(formatQueuePosition(change));
      } catch {
        // The next tick reads again.
      } finally {
        polling = false;
      }
    };
    void pollQueue();
    session.queuePoll = setInterval(() => void pollQueue(), queue.pollMs);
  }
}
