import { randomUUID } from 'node:crypto';
import type { ActivitySlotInfo, CustomSlotSupplier, SlotPermit, SlotReleaseContext } from '@temporalio/worker';
import type { Sql } from '../db/client';
import type { Priority } from '../domain/generation';
import type { Logger } from '../lib/logger';
import { GPU_SLOTS_CHANNEL } from './capacity';
import { GpuSlotBook, type SlotCommand, type SlotEffect } from './gpu-slot-book';
import { acquireSlotLease, claimSlotLease, releaseDispatcherLeases, releaseSlotLease, renewSlotLeases, unclaimSlotLease, userServedSince, type LeaseRef } from './slot-leases';

/**
 * The GPU dispatcher's activity slot supplier. The SDK asks for a slot before it polls the `gpu` queue; a slot is granted
 * only when a Postgres lease of the pool can be taken, so while the pool is full nobody polls and tasks wait in Temporal's
 * backlog, where the server's fairness orders them. When a slot is released, the lease is deleted and every dispatcher
 * is told (LISTEN/NOTIFY) so the next one polls at once. Which leases are held, and what each call does to them, is kept
 * by gpu-slot-book.ts; this class performs its effects.
 */
export interface GpuSlotsOptions {
  pool: string;
  /** This dispatcher process, as the owner of its leases (unique per start). */
  dispatcherId: string;
  leaseTtlMs: number;
  logger: Logger;
  /** How often to look again without a notification (and to reclaim expired leases). */
  recheckMs?: number;
  /** Most leases held for waiting pollers (not running a task) at once: an idle dispatcher must not hoard the pool. */
  maxIdle: number;
}

export interface GpuSlotPermit extends SlotPermit {
  leaseId: string;
}

interface ReserveWaiter {
  resolve(permit: GpuSlotPermit): void;
  reject(reason: unknown): void;
  signal: AbortSignal;
  onAbort(): void;
}

// randomUUID draws from a cached pool of random bytes; a randomBytes call per acquisition cost more than the rest of it.
const newLeaseId = () => `lease_${randomUUID().replaceAll('-', '')}`;

/** The supplier: the SDK's calls go to the bookkeeping (gpu-slot-book.ts), whose effects are performed here against Postgres. */
export class GpuSlots implements CustomSlotSupplier<ActivitySlotInfo> {
  readonly type = 'custom' as const;
  private readonly book: GpuSlotBook;
  /** Reservations not granted yet, by the number the bookkeeping knows them by. */
  private readonly reserveWaiters = new Map<number, ReserveWaiter>();
  private nextWaiter = 0;
  /** Each lease's last unclaim in flight: a new claim of that lease must land after it, never before. */
  private readonly unclaims = new Map<string, Promise<void>>();
  private timers: NodeJS.Timeout[] = [];
  private unlisten?: () => Promise<void>;

  constructor(
    private readonly sql: Sql,
    private readonly options: GpuSlotsOptions,
  ) {
    this.book = new GpuSlotBook(options.maxIdle);
  }

  get pool(): string {
    return this.options.pool;
  }

  /** Leases held now, and how many carry a job. */
  snapshot(): { held: number; claimed: number } {
    return this.book.snapshot();
  }

  async start(): Promise<void> {
    const { unlisten } = await this.sql.listen(GPU_SLOTS_CHANNEL, (pool) => {
      if (pool === this.options.pool) this.run({ type: 'changed' });
    });
    this.unlisten = unlisten;
    const recheckMs = this.options.recheckMs ?? 1_000;
    this.timers.push(setInterval(() => this.run({ type: 'changed' }), recheckMs));
    this.timers.push(setInterval(() => void this.renew(), Math.max(200, this.options.leaseTtlMs / 3)));
  }

  /** Stops granting slots and gives back every lease still held (the worker has finished its tasks by now). */
  async stop(): Promise<void> {
    for (const timer of this.timers) clearInterval(timer);
    const effects = this.book.apply({ type: 'stop' });
    this.perform(effects.filter((effect) => effect.type !== 'giveBackAll'));
    await this.unlisten?.().catch(() => undefined);
    if (effects.some((effect) => effect.type === 'giveBackAll')) {
      await releaseDispatcherLeases(this.sql, this.options.dispatcherId).catch((err: unknown) =>
        this.options.logger.warn({ err }, 'could not give back GPU slot leases; they expire on their own'),
      );
    }
    this.book.apply({ type: 'stopped' });
  }

  // ---- CustomSlotSupplier: called by the SDK ----

  reserveSlot(_ctx: unknown, abortSignal: AbortSignal): Promise<SlotPermit> {
    return new Promise<GpuSlotPermit>((resolve, reject) => {
      if (abortSignal.aborted) return reject(abortSignal.reason);
      const waiter = this.nextWaiter++;
      const onAbort = () => this.run({ type: 'abandon', waiter });
      this.reserveWaiters.set(waiter, { resolve, reject, signal: abortSignal, onAbort });
      abortSignal.addEventListener('abort', onAbort, { once: true });
      this.run({ type: 'reserve', waiter });
    });
  }

  /** Eager dispatch would bypass both the lease and Temporal's fairness: never granted. */
  tryReserveSlot(): SlotPermit | null {
    return null;
  }

  markSlotUsed(): void {
    this.run({ type: 'markUsed' });
  }

  releaseSlot(ctx: SlotReleaseContext<ActivitySlotInfo>): void {
    const { leaseId } = ctx.permit as GpuSlotPermit;
    this.run({ type: 'release', leaseId, used: ctx.slotInfo !== undefined });
  }

  // ---- Claims: called around each GPU activity (see claim-interceptor.ts) ----

  /**
   * Puts a job on one of this dispatcher's leases, unless the pool already runs as many jobs as its capacity (only after
   * capacity fell: a slot reserved under the old number received a task). `force` counts a backend job that already
   * exists. Returns the lease id to unclaim, or undefined when the pool is full.
   */
  async claim(jobId: string, { force }: { force: boolean }): Promise<string | undefined> {
    const [effect] = this.book.apply({ type: 'claim', jobId });
    const leaseId = effect.type === 'claim' ? effect.leaseId : undefined;
    if (leaseId === undefined) throw new Error(`unexpected effect of a claim: ${effect.type}`);
    let claimed = false;
    try {
      await this.unclaims.get(leaseId);
      claimed = await claimSlotLease(this.sql, this.leaseRef(leaseId), jobId, force);
    } finally {
      if (!claimed) this.book.apply({ type: 'claimFailed', leaseId });
    }
    if (claimed) return leaseId;
    this.options.logger.info({ jobId, pool: this.options.pool }, 'GPU capacity fell: the job goes back to the queue');
    return undefined;
  }

  /** Whether a job raised to its lane's first-job priority finds its raise spent: a later job of its user and lane got a slot first. */
  firstJobRaiseSpent(jobId: string, userId: string, admittedAt: Date, priority: Priority): Promise<boolean> {
    return userServedSince(this.sql, { pool: this.options.pool, jobId, userId, since: admittedAt, priority });
  }

  unclaim(leaseId: string): void {
    this.run({ type: 'unclaim', leaseId });
  }

  // ---- internals: performing the bookkeeping's effects ----

  private run(command: SlotCommand): void {
    this.perform(this.book.apply(command));
  }

  private perform(effects: SlotEffect[]): void {
    for (const effect of effects) {
      switch (effect.type) {
        case 'acquire':
          void this.acquire();
          break;
        case 'grant': {
          const waiter = this.takeWaiter(effect.waiter);
          waiter?.signal.removeEventListener('abort', waiter.onAbort);
          waiter?.resolve({ leaseId: effect.leaseId });
          break;
        }
        case 'refuse': {
          const waiter = this.takeWaiter(effect.waiter);
          waiter?.reject(effect.reason === 'abandoned' ? waiter.signal.reason : new Error('the GPU dispatcher is stopping'));
          break;
        }
        case 'giveBack':
          releaseSlotLease(this.sql, effect.leaseId)
            .catch((err: unknown) => this.options.logger.warn({ err, leaseId: effect.leaseId }, 'could not release a GPU slot lease; it expires on its own'))
            .finally(() => this.run({ type: 'changed' }));
          break;
        case 'unclaim':
          this.writeUnclaim(effect.leaseId);
          break;
        case 'leasesLost':
          // Only a pause longer than the TTL (a stalled process, Postgres unreachable) loses leases; claims re-create them.
          this.options.logger.error({ lost: effect.leaseIds, pool: this.options.pool }, 'GPU slot leases expired while held');
          break;
        case 'claim':
        case 'giveBackAll':
          throw new Error(`${effect.type} is performed by its caller`);
      }
    }
  }

  private takeWaiter(id: number): ReserveWaiter | undefined {
    const waiter = this.reserveWaiters.get(id);
    this.reserveWaiters.delete(id);
    return waiter;
  }

  private leaseRef(leaseId: string): LeaseRef {
    return { pool: this.options.pool, dispatcherId: this.options.dispatcherId, leaseId, ttlMs: this.options.leaseTtlMs };
  }

  private async acquire(): Promise<void> {
    const leaseId = newLeaseId();
    let acquired = false;
    try {
      acquired = await acquireSlotLease(this.sql, this.leaseRef(leaseId));
    } catch (err) {
      this.options.logger.warn({ err, pool: this.options.pool }, 'GPU slot lease acquisition failed; will try again');
    }
    this.run({ type: 'acquired', leaseId: acquired ? leaseId : null });
  }

  private writeUnclaim(leaseId: string): void {
    const written = unclaimSlotLease(this.sql, leaseId)
      .catch((err: unknown) => this.options.logger.warn({ err, leaseId }, 'could not unclaim a GPU slot lease'))
      .finally(() => {
        if (this.unclaims.get(leaseId) === written) this.unclaims.delete(leaseId);
      });
    this.unclaims.set(leaseId, written);
  }

  private async renew(): Promise<void> {
    const { stopped, held } = this.book.view;
    if (stopped || held.size === 0) return;
    const before = [...held.keys()];
    try {
      const kept = await renewSlotLeases(this.sql, this.options.dispatcherId, this.options.leaseTtlMs);
      this.run({ type: 'renewed', before, kept });
    } catch (err) {
      this.options.logger.warn({ err }, 'could not renew GPU slot leases');
    }
  }
}
