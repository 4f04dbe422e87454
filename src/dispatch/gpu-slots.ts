import { randomBytes } from 'node:crypto';
import type { ActivitySlotInfo, CustomSlotSupplier, SlotPermit, SlotReleaseContext } from '@temporalio/worker';
import type { Sql } from '../db/client';
import type { Logger } from '../lib/logger';
import { GPU_SLOTS_CHANNEL } from './capacity';
import { acquireSlotLease, claimSlotLease, releaseDispatcherLeases, releaseSlotLease, renewSlotLeases, unclaimSlotLease, userServedSince, type LeaseRef } from './slot-leases';

/**
 * The GPU dispatcher's activity slot supplier. The SDK asks for a slot before it polls the `gpu` queue; a slot is granted
 * only when a Postgres lease of the pool can be taken, so while the pool is full nobody polls and tasks wait in Temporal's
 * backlog, where the server's fairness orders them. When a slot is released, the lease is deleted and every dispatcher
 * is told (LISTEN/NOTIFY) so the next one polls at once.
 *
 * Leases are fungible within one dispatcher: a permit owns "a lease", and a starting activity claims any unclaimed one.
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

const newLeaseId = () => `lease_${randomBytes(10).toString('hex')}`;

export class GpuSlots implements CustomSlotSupplier<ActivitySlotInfo> {
  readonly type = 'custom' as const;
  /** Leases this dispatcher holds, and the job on each (null: waiting for a task). */
  private readonly held = new Map<string, string | null>();
  private readonly reserveWaiters: ReserveWaiter[] = [];
  /** Permits the SDK has put to use (a task arrived); the others wait in a poll. */
  private usedPermits = 0;
  /** Each lease's last unclaim in flight: a new claim of that lease must land after it, never before. */
  private readonly unclaims = new Map<string, Promise<void>>();
  private pumping = false;
  private kickAgain = false;
  private stopped = false;
  private timers: NodeJS.Timeout[] = [];
  private unlisten?: () => Promise<void>;

  constructor(
    private readonly sql: Sql,
    private readonly options: GpuSlotsOptions,
  ) {}

  get pool(): string {
    return this.options.pool;
  }

  /** Leases held now, and how many carry a job. */
  snapshot(): { held: number; claimed: number } {
    return { held: this.held.size, claimed: [...this.held.values()].filter((job) => job !== null).length };
  }

  async start(): Promise<void> {
    const { unlisten } = await this.sql.listen(GPU_SLOTS_CHANNEL, (pool) => {
      if (pool === this.options.pool) this.changed();
    });
    this.unlisten = unlisten;
    const recheckMs = this.options.recheckMs ?? 1_000;
    this.timers.push(setInterval(() => this.changed(), recheckMs));
    this.timers.push(setInterval(() => void this.renew(), Math.max(200, this.options.leaseTtlMs / 3)));
  }

  /** Stops granting slots and gives back every lease still held (the worker has finished its tasks by now). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers) clearInterval(timer);
    for (const waiter of this.reserveWaiters.splice(0)) waiter.reject(new Error('the GPU dispatcher is stopping'));
    this.changed();
    await this.unlisten?.().catch(() => undefined);
    await releaseDispatcherLeases(this.sql, this.options.dispatcherId).catch((err: unknown) =>
      this.options.logger.warn({ err }, 'could not give back GPU slot leases; they expire on their own'),
    );
    this.held.clear();
  }

  // ---- CustomSlotSupplier: called by the SDK ----

  reserveSlot(_ctx: unknown, abortSignal: AbortSignal): Promise<SlotPermit> {
    return new Promise<GpuSlotPermit>((resolve, reject) => {
      if (abortSignal.aborted) return reject(abortSignal.reason);
      const waiter: ReserveWaiter = {
        resolve,
        reject,
        signal: abortSignal,
        onAbort: () => {
          const index = this.reserveWaiters.indexOf(waiter);
          if (index >= 0) this.reserveWaiters.splice(index, 1);
          reject(abortSignal.reason);
        },
      };
      abortSignal.addEventListener('abort', waiter.onAbort, { once: true });
      this.reserveWaiters.push(waiter);
      this.kick();
    });
  }

  /** Eager dispatch would bypass both the lease and Temporal's fairness: never granted. */
  tryReserveSlot(): SlotPermit | null {
    return null;
  }

  markSlotUsed(): void {
    this.usedPermits++;
    this.kick(); // one fewer idle lease: a waiting poller may take one
  }

  releaseSlot(ctx: SlotReleaseContext<ActivitySlotInfo>): void {
    const { leaseId } = ctx.permit as GpuSlotPermit;
    if (ctx.slotInfo !== undefined) this.usedPermits = Math.max(0, this.usedPermits - 1);
    // Give back an idle lease: the permit's own if idle, else any idle one (the activity that ran has unclaimed its own).
    const idle = this.held.get(leaseId) === null ? leaseId : [...this.held].find(([, job]) => job === null)?.[0];
    const victim = idle ?? leaseId;
    this.held.delete(victim);
    releaseSlotLease(this.sql, victim)
      .catch((err: unknown) => this.options.logger.warn({ err, leaseId: victim }, 'could not release a GPU slot lease; it expires on its own'))
      .finally(() => this.changed());
  }

  // ---- Claims: called around each GPU activity (see claim-interceptor.ts) ----

  /**
   * Puts a job on one of this dispatcher's leases, unless the pool already runs as many jobs as its capacity (only after
   * capacity fell: a slot reserved under the old number received a task). `force` counts a backend job that already
   * exists. Returns the lease id to unclaim, or undefined when the pool is full.
   */
  async claim(jobId: string, { force }: { force: boolean }): Promise<string | undefined> {
    const leaseId = [...this.held].find(([, job]) => job === null)?.[0];
    if (leaseId === undefined) throw new Error('no GPU slot lease to claim: the slot supplier and the activities disagree');
    this.held.set(leaseId, jobId);
    let claimed = false;
    try {
      await this.unclaims.get(leaseId);
      claimed = await claimSlotLease(this.sql, this.leaseRef(leaseId), jobId, force);
    } finally {
      if (!claimed && this.held.has(leaseId)) this.held.set(leaseId, null);
    }
    if (claimed) return leaseId;
    this.options.logger.info({ jobId, pool: this.options.pool }, 'GPU capacity fell: the job goes back to the queue');
    return undefined;
  }

  /** Whether a job raised to the first-job priority finds its raise spent: a later job of its user got a slot first. */
  firstJobRaiseSpent(jobId: string, userId: string, admittedAt: Date): Promise<boolean> {
    return userServedSince(this.sql, { pool: this.options.pool, jobId, userId, since: admittedAt });
  }

  unclaim(leaseId: string): void {
    if (!this.held.has(leaseId)) return;
    this.held.set(leaseId, null);
    const written = unclaimSlotLease(this.sql, leaseId)
      .catch((err: unknown) => this.options.logger.warn({ err, leaseId }, 'could not unclaim a GPU slot lease'))
      .finally(() => {
        if (this.unclaims.get(leaseId) === written) this.unclaims.delete(leaseId);
      });
    this.unclaims.set(leaseId, written);
  }

  // ---- internals ----

  private leaseRef(leaseId: string): LeaseRef {
    return { pool: this.options.pool, dispatcherId: this.options.dispatcherId, leaseId, ttlMs: this.options.leaseTtlMs };
  }

  private changed(): void {
    this.kick();
  }

  /** One acquisition at a time per process; a kick during one makes the loop go round again. */
  private kick(): void {
    if (this.stopped || this.reserveWaiters.length === 0) return;
    if (this.pumping) {
      this.kickAgain = true;
      return;
    }
    this.pumping = true;
    void this.pump().finally(() => (this.pumping = false));
  }

  private async pump(): Promise<void> {
    do {
      this.kickAgain = false;
      while (this.reserveWaiters.length > 0 && !this.stopped && this.held.size - this.usedPermits < this.options.maxIdle) {
        const leaseId = newLeaseId();
        let acquired = false;
        try {
          acquired = await acquireSlotLease(this.sql, this.leaseRef(leaseId));
        } catch (err) {
          this.options.logger.warn({ err, pool: this.options.pool }, 'GPU slot lease acquisition failed; will try again');
        }
        if (!acquired) break;
        const waiter = this.reserveWaiters.shift();
        if (!waiter || this.stopped) {
          await releaseSlotLease(this.sql, leaseId).catch(() => undefined); // nobody wants it any more
          break;
        }
        waiter.signal.removeEventListener('abort', waiter.onAbort);
        this.held.set(leaseId, null);
        waiter.resolve({ leaseId });
      }
    } while (this.kickAgain && this.reserveWaiters.length > 0 && !this.stopped);
  }

  private async renew(): Promise<void> {
    if (this.stopped || this.held.size === 0) return;
    // Only leases held before the renewal and still held after it can have been lost (others came or went meanwhile).
    const before = [...this.held.keys()];
    try {
      const kept = await renewSlotLeases(this.sql, this.options.dispatcherId, this.options.leaseTtlMs);
      const lost = before.filter((id) => this.held.has(id) && !kept.has(id));
      // Only a pause longer than the TTL (a stalled process, Postgres unreachable) loses leases; claims re-create them.
      if (lost.length > 0) this.options.logger.error({ lost, pool: this.options.pool }, 'GPU slot leases expired while held');
    } catch (err) {
      this.options.logger.warn({ err }, 'could not renew GPU slot leases');
    }
  }
}
