import { randomUUID } from 'node:crypto';
import type { BackendCallback, BackendEventType } from '../src/backend/types';
import type { Logger } from '../src/lib/logger';
import { signWebhook } from '../src/lib/webhook-signature';
import { systemClock, TimerSet, type Clock, type Random } from './clock';
import type { JobEvent } from './engine';
import type { SimulatorKnobs } from './knobs';

/**
 * Delivers signed job callbacks the way an unreliable provider would: the knobs lose, duplicate, delay and reorder them;
 * a failing receiver gets a few retries. Events of one job go out one after another, in order unless reordered.
 */
export interface CallbackStats {
  /** Deliveries answered 2xx, duplicates included. */
  callbacks_sent: number;
  /** Events the loss knob swallowed. */
  callbacks_dropped: number;
  /** Events sent a second time by the duplicate knob. */
  callbacks_duplicated: number;
  /** Deliveries abandoned after every retry failed. */
  callbacks_failed: number;
}

export interface CallbackDispatcherOptions {
  webhookSecret: string;
  knobs: () => SimulatorKnobs;
  logger: Logger;
  clock?: Clock;
  random?: Random;
  fetch?: typeof fetch;
  maxAttempts?: number;
  attemptTimeoutMs?: number;
}

interface Outgoing {
  url: string;
  eventId: string;
  jobId: string;
  type: BackendEventType;
  body: string;
  delayMs: number;
  duplicate: boolean;
}

interface JobChain {
  tail: Promise<void>;
  /** A reordered start event, sent once the terminal one has gone. */
  heldStarted: Outgoing | null;
}

const MIN_BACKOFF_MS = 20;
const BASE_BACKOFF_MS = 50;

const emptyStats = (): CallbackStats => ({ callbacks_sent: 0, callbacks_dropped: 0, callbacks_duplicated: 0, callbacks_failed: 0 });

export class CallbackDispatcher {
  private readonly chains = new Map<string, JobChain>();
  private readonly timers: TimerSet;
  private readonly shutdown = new AbortController();
  private readonly random: Random;
  private readonly fetch: typeof fetch;
  private readonly maxAttempts: number;
  private readonly attemptTimeoutMs: number;
  private counters = emptyStats();
  private closed = false;

  constructor(private readonly options: CallbackDispatcherOptions) {
    this.timers = new TimerSet(options.clock ?? systemClock);
    this.random = options.random ?? Math.random;
    this.fetch = options.fetch ?? fetch;
    this.maxAttempts = options.maxAttempts ?? 5;
    this.attemptTimeoutMs = options.attemptTimeoutMs ?? 5_000;
  }

  /** Engine listener: turns a job event into zero, one or two deliveries. */
  readonly handle = (event: JobEvent): void => {
    if (this.closed || !event.callbackUrl) return;
    const jobId = event.job.id;
    const chain = this.chains.get(jobId) ?? { tail: Promise.resolve(), heldStarted: null };
    this.chains.set(jobId, chain);
    const knobs = this.options.knobs();
    const outgoing = this.prepare(event, event.callbackUrl, knobs);

    if (event.kind === 'started') {
      if (outgoing && this.random() < knobs.callbackReorderRate) chain.heldStarted = outgoing;
      else if (outgoing) this.enqueue(chain, outgoing);
      return;
    }
    if (outgoing) this.enqueue(chain, outgoing);
    if (chain.heldStarted) this.enqueue(chain, chain.heldStarted);
    chain.heldStarted = null;
    const last = chain.tail;
    void last.then(() => {
      if (this.chains.get(jobId)?.tail === last) this.chains.delete(jobId);
    });
  };

  stats(): CallbackStats {
    return { ...this.counters };
  }

  resetStats(): void {
    this.counters = emptyStats();
  }

  /** Resolves when every queued delivery has finished (held start events of unfinished jobs aside). */
  async idle(): Promise<void> {
    while (this.chains.size > 0 && !this.closed) {
      const tails = [...this.chains.values()].map((c) => c.tail);
      await Promise.all(tails);
      if ([...this.chains.values()].every((c) => tails.includes(c.tail))) return;
    }
  }

  /** Drops pending deliveries, cancels waits and aborts requests in flight. */
  close(): void {
    this.closed = true;
    this.shutdown.abort();
    this.timers.clearAll();
    this.chains.clear();
  }

  private prepare(event: JobEvent, url: string, knobs: SimulatorKnobs): Outgoing | null {
    const type: BackendEventType = event.kind === 'started' ? 'job.started' : (`job.${event.job.status}` as BackendEventType);
    if (this.random() < knobs.callbackLossRate) {
      this.counters.callbacks_dropped++;
      this.options.logger.debug({ jobId: event.job.id, type }, 'callback lost on purpose');
      return null;
    }
    const eventId = `evt_${randomUUID()}`;
    const callback: BackendCallback = { event_id: eventId, type, sequence: event.kind === 'started' ? 1 : 2, job: event.job };
    return {
      url,
      eventId,
      jobId: event.job.id,
      type,
      body: JSON.stringify(callback),
      delayMs: this.random() * knobs.callbackDelayMs,
      duplicate: this.random() < knobs.callbackDuplicateRate,
    };
  }

  private enqueue(chain: JobChain, outgoing: Outgoing): void {
    chain.tail = chain.tail.then(() => this.deliver(outgoing));
  }

  private async deliver(outgoing: Outgoing): Promise<void> {
    if (outgoing.delayMs > 0) await this.timers.sleep(outgoing.delayMs);
    await this.post(outgoing);
    if (outgoing.duplicate && !this.closed) {
      this.counters.callbacks_duplicated++;
      await this.post(outgoing);
    }
  }

  /** One delivery with retries; never throws. */
  private async post(outgoing: Outgoing): Promise<void> {
    let lastProblem = '';
    for (let attempt = 0; attempt < this.maxAttempts; attempt++) {
      if (this.closed) return;
      if (attempt > 0) await this.timers.sleep(this.backoffMs(attempt - 1));
      if (this.closed) return;
      try {
        const response = await this.fetch(outgoing.url, {
          method: 'POST',
          headers: { ...signWebhook(this.options.webhookSecret, outgoing.eventId, outgoing.body), 'content-type': 'application/json' },
          body: outgoing.body,
          signal: AbortSignal.any([this.shutdown.signal, AbortSignal.timeout(this.attemptTimeoutMs)]),
        });
        await response.arrayBuffer().catch(() => undefined); // drain so the connection is reused
        if (response.ok) {
          this.counters.callbacks_sent++;
          return;
        }
        lastProblem = `status ${response.status}`;
      } catch (err) {
        lastProblem = err instanceof Error ? err.message : String(err);
      }
    }
    if (this.closed) return;
    this.counters.callbacks_failed++;
    this.options.logger.warn(
      { jobId: outgoing.jobId, eventId: outgoing.eventId, type: outgoing.type, problem: lastProblem },
      'callback delivery abandoned',
    );
  }

  /** 50ms·2^n in simulated time, but never so short that a receiver has no chance to recover. */
  private backoffMs(retry: number): number {
    return Math.max(MIN_BACKOFF_MS, BASE_BACKOFF_MS * 2 ** retry * this.options.knobs().timeScale);
  }
}
