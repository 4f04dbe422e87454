import type { Response } from 'express';
import { GENERATION_STATUSES, isTerminal, type GenerationStatus } from '../domain/generation-state';
import { UserSlots } from '../notifications/stream-slots';
import type { GenerationEventHub } from '../notifications/event-hub';

/**
 * `Prefer: wait=N` (RFC 7240) on a submit and on a read of one generation: the answer waits up to N seconds for the job
 * to end. The wait is woken by the change feed the event streams read (GenerationEventHub: one poll per process for all
 * the users with a stream or a wait open), not by a loop of its own; it holds no database connection while it waits,
 * ends at once when its client goes away, and is capped per user and per process.
 */

/** The longest wait honoured: beyond it a client should follow an event stream. */
export const MAX_WAIT_SECONDS = 60;

/**
 * The `wait` preference of a Prefer header, when it is one this API honours: an integer of seconds from 1 to 60. Anything
 * else — no header, another preference, `wait=0`, `wait=61`, `wait=soon` — is undefined, and the request is answered as
 * if it had not been asked, as RFC 7240 says of a preference the server cannot honour. As the RFC says, only the first
 * `wait` counts; names are case-insensitive, a value may be quoted, parameters after `;` are ignored.
 */
export function preferredWait(header: string | undefined): number | undefined {
  if (header === undefined) return undefined;
  for (const preference of header.split(',')) {
    const [head] = preference.split(';');
    const match = /^\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*(?:=\s*(?:"([^"]*)"|([^\s"]*)))?\s*$/.exec(head);
    if (!match || match[1].toLowerCase() !== 'wait') continue;
    const value = match[2] ?? match[3] ?? '';
    if (!/^\d{1,2}$/.test(value)) return undefined;
    const seconds = Number(value);
    return seconds >= 1 && seconds <= MAX_WAIT_SECONDS ? seconds : undefined;
  }
  return undefined;
}

/**
 * The open waits of this API process, each a socket, a timer and a share of the change-feed poll. Counted apart from
 * event streams: a wait lasts at most a minute, and a status page's open streams should not keep its user from waiting
 * for a submit. Per process, as the streams' caps are.
 */
export class WaitSlots extends UserSlots {
  constructor(limits: { perUser: number; total: number }) {
    super(limits, {
      perUser: { code: 'too_many_waits', message: (limit) => `at most ${limit} waiting requests (Prefer: wait) per user at once` },
      total: { code: 'wait_capacity_reached', message: 'this server has as many waiting requests (Prefer: wait) as it takes; retry shortly, or without the preference' },
      retryAfterSeconds: 5,
    });
  }
}

const STATUSES = new Set<string>(GENERATION_STATUSES);
const endsTheJob = (status: unknown) => typeof status === 'string' && STATUSES.has(status) && isTerminal(status as GenerationStatus);

/**
 * Waits until the job ends, `seconds` pass, or the response closes (the client went away), whichever comes first, and
 * says which. Subscribes to the job's events from its first, so an ending committed before the subscription counts.
 */
export function waitForEnd(hub: GenerationEventHub, res: Response, { userId, jobId, seconds }: { userId: string; jobId: string; seconds: number }): Promise<'ended' | 'timeout' | 'gone'> {
  return new Promise((resolve, reject) => {
    let done = false;
    let close: (() => void) | undefined;
    const finish = (how: 'ended' | 'timeout' | 'gone' | Error) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      res.off('close', gone);
      close?.();
      if (how instanceof Error) reject(how);
      else resolve(how);
    };
    const gone = () => finish('gone');
    const timer = setTimeout(() => finish('timeout'), seconds * 1000);
    res.once('close', gone);
    // Gone before the wait began (during the admission, say): nothing to wait for.
    if (res.closed || res.socket === null || res.socket.destroyed) return gone();
    hub
      .subscribe({ userId, jobId }, { send: (event) => (endsTheJob(event.payload.status) ? finish('ended') : undefined), ready: () => !done })
      .then((subscription) => {
        close = subscription.close;
        if (done) return subscription.close();
        subscription.start();
      })
      .catch((err: unknown) => finish(err instanceof Error ? err : new Error(String(err))));
  });
}
