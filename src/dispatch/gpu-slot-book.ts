/**
 * The GPU slot supplier's bookkeeping, with no I/O and no timers: the SDK's calls, the answers of the lease queries and
 * the dispatcher's own events go in as commands; what to do against Postgres comes out as effects, which the supplier
 * (gpu-slots.ts) performs and reports back as further commands. Pure, so its rules hold for any order of calls
 * (gpu-slot-book.test.ts checks them over random sequences).
 *
 * Leases are fungible within one dispatcher: a permit owns "a lease", and a starting activity claims any unclaimed one.
 */
export type SlotCommand =
  /** The SDK wants a slot for a poller (reserveSlot); `waiter` names this reservation. */
  | { type: 'reserve'; waiter: number }
  /** The SDK gave up on a reservation (its abort signal fired). */
  | { type: 'abandon'; waiter: number }
  /** A task arrived on a granted slot (markSlotUsed). */
  | { type: 'markUsed' }
  /** The SDK released the permit holding `leaseId` (releaseSlot); `used` when a task had arrived on it. */
  | { type: 'release'; leaseId: string; used: boolean }
  /** A slot may have come free: a notification from the pool, the recheck timer, a release of ours written. */
  | { type: 'changed' }
  /** The acquisition in flight took `leaseId`; null when the pool was full or the query failed. */
  | { type: 'acquired'; leaseId: string | null }
  /** A GPU activity starts: its job goes on one of the idle leases (named by the `claim` effect). */
  | { type: 'claim'; jobId: string }
  /** The claim was refused (the pool already runs its capacity) or failed: the lease is idle again. */
  | { type: 'claimFailed'; leaseId: string }
  /** The activity on `leaseId` ended: the lease is idle again, still held. */
  | { type: 'unclaim'; leaseId: string }
  /** A renewal that started while `before` were held came back with only `kept` still in the pool. */
  | { type: 'renewed'; before: readonly string[]; kept: ReadonlySet<string> }
  /** The dispatcher stops: no more grants, every waiting reservation refused, every lease to be given back. */
  | { type: 'stop' }
  /** The leases were given back (or will expire on their own): nothing is held any more. */
  | { type: 'stopped' };

export type SlotEffect =
  /** Try to take one lease of the pool, then report `acquired` (one acquisition at a time). */
  | { type: 'acquire' }
  /** Hand the reservation its permit. */
  | { type: 'grant'; waiter: number; leaseId: string }
  /** Fail the reservation: the SDK abandoned it, or the dispatcher is stopping. */
  | { type: 'refuse'; waiter: number; reason: 'abandoned' | 'stopping' }
  /** Delete the lease from the pool, then report `changed`. */
  | { type: 'giveBack'; leaseId: string }
  /** Write the job onto the lease if the pool's capacity allows it; report `claimFailed` if not. */
  | { type: 'claim'; leaseId: string; jobId: string }
  /** Write the lease as idle (it stays held). */
  | { type: 'unclaim'; leaseId: string }
  /** Leases expired while held (only a pause longer than the TTL does that); a claim re-creates them. */
  | { type: 'leasesLost'; leaseIds: string[] }
  /** Delete every lease of this dispatcher from the pool. */
  | { type: 'giveBackAll' };

export interface SlotBookView {
  /** Leases held, in the order they were taken, and the job on each (null: idle, waiting for a task). */
  held: ReadonlyMap<string, string | null>;
  /** Reservations waiting for a lease, oldest first. */
  waiting: readonly number[];
  /** Permits the SDK has put to use (a task arrived); the other granted ones wait in a poll. */
  used: number;
  /** Whether an acquisition is in flight. */
  acquiring: boolean;
  stopped: boolean;
}

export class GpuSlotBook {
  private readonly held = new Map<string, string | null>();
  private readonly waiting: number[] = [];
  private used = 0;
  private acquiring = false;
  /** A change came while an acquisition was in flight: go round again after it, even if it found the pool full. */
  private again = false;
  private stopped = false;

  /** `maxIdle`: most leases held for waiting polls at once, so an idle dispatcher does not hoard the pool. */
  constructor(private readonly maxIdle: number) {}

  get view(): SlotBookView {
    return { held: new Map(this.held), waiting: [...this.waiting], used: this.used, acquiring: this.acquiring, stopped: this.stopped };
  }

  /** Leases held now, and how many carry a job. */
  snapshot(): { held: number; claimed: number } {
    return { held: this.held.size, claimed: [...this.held.values()].filter((job) => job !== null).length };
  }

  apply(command: SlotCommand): SlotEffect[] {
    switch (command.type) {
      case 'reserve':
        this.waiting.push(command.waiter);
        return this.kick();
      case 'abandon': {
        const index = this.waiting.indexOf(command.waiter);
        if (index < 0) return [];
        this.waiting.splice(index, 1);
        return [{ type: 'refuse', waiter: command.waiter, reason: 'abandoned' }];
      }
      case 'markUsed':
        this.used++;
        return this.kick(); // one fewer lease held for a waiting poll: another poller may take one
      case 'release':
        return this.release(command.leaseId, command.used);
      case 'changed':
        return this.kick();
      case 'acquired':
        return this.acquired(command.leaseId);
      case 'claim': {
        const leaseId = this.idleLease();
        if (leaseId === undefined) throw new Error('no GPU slot lease to claim: the slot supplier and the activities disagree');
        this.held.set(leaseId, command.jobId);
        return [{ type: 'claim', leaseId, jobId: command.jobId }];
      }
      case 'claimFailed':
        if (this.held.has(command.leaseId)) this.held.set(command.leaseId, null);
        return [];
      case 'unclaim':
        if (!this.held.has(command.leaseId)) return [];
        this.held.set(command.leaseId, null);
        return [{ type: 'unclaim', leaseId: command.leaseId }];
      case 'renewed': {
        // Only leases held before the renewal and still held after it can have been lost (others came or went meanwhile).
        const lost = command.before.filter((id) => this.held.has(id) && !command.kept.has(id));
        return lost.length > 0 ? [{ type: 'leasesLost', leaseIds: lost }] : [];
      }
      case 'stop': {
        this.stopped = true;
        const refused = this.waiting.splice(0).map((waiter): SlotEffect => ({ type: 'refuse', waiter, reason: 'stopping' }));
        return [...refused, { type: 'giveBackAll' }];
      }
      case 'stopped':
        this.held.clear();
        return [];
    }
  }

  private idleLease(): string | undefined {
    return [...this.held].find(([, job]) => job === null)?.[0];
  }

  /** Gives back an idle lease: the permit's own if idle, else any idle one (the activity that ran has unclaimed its own). */
  private release(leaseId: string, used: boolean): SlotEffect[] {
    if (used) this.used = Math.max(0, this.used - 1);
    const victim = (this.held.get(leaseId) === null ? leaseId : this.idleLease()) ?? leaseId;
    this.held.delete(victim);
    return [{ type: 'giveBack', leaseId: victim }];
  }

  private roomForLease(): boolean {
    return this.waiting.length > 0 && !this.stopped && this.held.size - this.used < this.maxIdle;
  }

  /** One acquisition at a time; a change during one makes the round go on after it. */
  private kick(): SlotEffect[] {
    if (this.stopped || this.waiting.length === 0) return [];
    if (this.acquiring) {
      this.again = true;
      return [];
    }
    this.acquiring = true;
    this.again = false;
    return this.continueRound();
  }

  private acquired(leaseId: string | null): SlotEffect[] {
    if (leaseId === null) return this.endRound(); // the pool is full: wait for a change
    const waiter = this.stopped ? undefined : this.waiting.shift();
    if (waiter === undefined) return [{ type: 'giveBack', leaseId }, ...this.endRound()]; // nobody wants it any more
    this.held.set(leaseId, null);
    return [{ type: 'grant', waiter, leaseId }, ...this.continueRound()];
  }

  private continueRound(): SlotEffect[] {
    if (this.roomForLease()) return [{ type: 'acquire' }];
    return this.endRound();
  }

  private endRound(): SlotEffect[] {
    if (this.again && this.waiting.length > 0 && !this.stopped) {
      this.again = false;
      return this.continueRound();
    }
    this.acquiring = false;
    this.again = false;
    return [];
  }
}
