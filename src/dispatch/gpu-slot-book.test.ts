import fc from 'fast-check';
import { GpuSlotBook, type SlotCommand, type SlotEffect } from './gpu-slot-book';

/**
 * The slot supplier's bookkeeping over random sequences of the SDK's calls (reserve, abandon, a task arriving, an
 * activity claiming, ending or being handed back, a poll ending empty) and of what happens around it (acquisitions
 * answered, other dispatchers taking and freeing slots, leases lost to expiry, capacity changes, stop, a crash). A small
 * model plays the SDK and the pool and performs every effect the way gpu-slots.ts does.
 */

type PermitState = 'polling' | 'used' | 'running';
interface Permit {
  leaseId: string;
  state: PermitState;
  /** The lease the running activity's job was put on (any idle one, not necessarily the permit's own). */
  claimed?: { leaseId: string; jobId: string };
}

/** Each action, and how often it comes (the SDK's calls and answers often; a stop or a crash seldom, as it ends a run). */
const ACTIONS = {
  reserve: 30,
  abandon: 4,
  answerAcquisition: 30,
  taskArrives: 20,
  activityStarts: 20,
  activityEnds: 15,
  pollEndsEmpty: 6,
  giveBackWritten: 20,
  changed: 6,
  otherDispatcher: 6,
  leaseLost: 2,
  renewal: 2,
  capacity: 4,
  stop: 1,
  stopped: 3,
  crash: 1,
} as const;
type Action = { kind: keyof typeof ACTIONS; pick: number; ok: boolean };

const kind = fc.oneof(...Object.entries(ACTIONS).map(([name, weight]) => ({ arbitrary: fc.constant(name as Action['kind']), weight })));
const action: fc.Arbitrary<Action> = fc.record({ kind, pick: fc.nat(), ok: fc.boolean() });
/** Long runs: the interesting states (every lease busy, a stop mid-run) need many calls to reach. */
const actions = (maxLength: number) => fc.array(action, { maxLength, size: 'max' });

/** One dispatcher's book in a pool shared with others; throws at the first broken rule. */
class Run {
  book: GpuSlotBook;
  /** The pool in Postgres: our leases (and the job on each) and how many the other dispatchers hold. */
  readonly pool = new Map<string, string | null>();
  others = 0;
  capacity: number;
  /** Granted by the pool to this book and not given back since: the book may hold only these. */
  granted = new Set<string>();
  waiting: number[] = [];
  permits: Permit[] = [];
  acquisitionInFlight = false;
  /** Something that may have made room happened while the acquisition in flight was being answered. */
  changedDuringAcquisition = false;
  givingBack: string[] = [];
  stopping = false;
  stopped = false;
  private nextId = 0;

  constructor(
    readonly maxIdle: number,
    capacity: number,
  ) {
    this.capacity = capacity;
    this.book = new GpuSlotBook(maxIdle);
  }

  private pick<T>(items: T[], n: number): T | undefined {
    return items.length === 0 ? undefined : items[n % items.length];
  }

  private apply(command: SlotCommand): SlotEffect[] {
    if (this.acquisitionInFlight && ['reserve', 'markUsed', 'changed'].includes(command.type)) this.changedDuringAcquisition = true;
    const effects = this.book.apply(command);
    for (const effect of effects) this.perform(effect);
    this.checkInvariants(command, effects);
    return effects;
  }

  private perform(effect: SlotEffect): void {
    switch (effect.type) {
      case 'acquire':
        if (this.acquisitionInFlight) throw new Error('two acquisitions at once');
        this.acquisitionInFlight = true;
        this.changedDuringAcquisition = false;
        break;
      case 'grant':
        if (!this.waiting.includes(effect.waiter)) throw new Error(`granted reservation ${effect.waiter}, which is not waiting`);
        if (this.stopping) throw new Error('granted a slot after stop');
        this.waiting = this.waiting.filter((w) => w !== effect.waiter);
        this.permits.push({ leaseId: effect.leaseId, state: 'polling' });
        break;
      case 'refuse':
        if (!this.waiting.includes(effect.waiter)) throw new Error(`refused reservation ${effect.waiter}, which is not waiting`);
        this.waiting = this.waiting.filter((w) => w !== effect.waiter);
        break;
      case 'giveBack':
        this.granted.delete(effect.leaseId);
        this.givingBack.push(effect.leaseId);
        break;
      case 'unclaim':
        if (this.pool.has(effect.leaseId)) this.pool.set(effect.leaseId, null);
        break;
      case 'giveBackAll':
        this.pool.clear(); // the book forgets them once that is written ('stopped')
        break;
      case 'leasesLost':
        for (const id of effect.leaseIds) if (this.pool.has(id)) throw new Error(`${id} reported lost but still in the pool`);
        break;
      case 'claim':
        break; // performed by the activity (see activityStarts)
    }
  }

  private checkInvariants(command: SlotCommand, effects: SlotEffect[]): void {
    const { held, used, waiting, acquiring } = this.book.view;
    // Never more held leases than granted: every held lease was taken from the pool and not given back.
    for (const id of held.keys()) if (!this.granted.has(id)) throw new Error(`holds ${id}, which the pool never granted or took back`);
    if (acquiring !== this.acquisitionInFlight) throw new Error('the book and the world disagree on an acquisition in flight');
    if (JSON.stringify(waiting) !== JSON.stringify(this.waiting)) throw new Error('the book and the SDK disagree on waiting reservations');
    if (this.stopped) {
      if (held.size !== 0 || waiting.length !== 0) throw new Error('holds leases after stopping');
      return;
    }
    if (!this.stopping) {
      // Each permit out holds exactly one lease, and a used permit always has one.
      if (held.size !== this.permits.length) throw new Error(`${held.size} leases held for ${this.permits.length} permits`);
      const usedPermits = this.permits.filter((p) => p.state !== 'polling').length;
      if (used !== usedPermits) throw new Error(`counts ${used} used permits, the SDK has ${usedPermits}`);
    }
    // Leases held for waiting polls (not for a task) stay within maxIdle.
    if (held.size - used > this.maxIdle) throw new Error(`${held.size - used} leases held for waiting polls, more than ${this.maxIdle}`);
    // A running job's lease is held and carries it.
    for (const permit of this.permits) {
      if (permit.claimed && held.get(permit.claimed.leaseId) !== permit.claimed.jobId) throw new Error(`the lease of running ${permit.claimed.jobId} is not held for it`);
    }
    // A waiting reservation is never forgotten: with room for a lease, one is acquired after any call that may have made
    // room, after a lease was granted, and after the pool was found full if something changed while it was being asked.
    const mayGoOn = ['reserve', 'markUsed', 'changed'].includes(command.type) || (command.type === 'acquired' && (command.leaseId !== null || this.changedDuringAcquisition));
    if (mayGoOn && !this.stopping && waiting.length > 0 && held.size - used < this.maxIdle && !acquiring) {
      throw new Error(`reservations wait with room for a lease after ${command.type}, and nothing is being acquired`);
    }
    if (command.type === 'release' && !this.stopping) {
      const givenBack = effects.filter((e) => e.type === 'giveBack');
      if (givenBack.length !== 1) throw new Error(`a release gave back ${givenBack.length} leases`);
    }
  }

  step({ kind, pick, ok }: Action): void {
    switch (kind) {
      case 'reserve': {
        if (this.stopping) return; // the SDK reserves no slot once the worker is shutting down
        const waiter = this.nextId++;
        this.waiting.push(waiter);
        this.apply({ type: 'reserve', waiter });
        return;
      }
      case 'abandon': {
        const waiter = this.pick(this.waiting, pick);
        if (waiter !== undefined) this.apply({ type: 'abandon', waiter });
        return;
      }
      case 'answerAcquisition': {
        if (!this.acquisitionInFlight) return;
        this.acquisitionInFlight = false;
        // `ok` false: the query failed. Otherwise the pool decides, as acquireSlotLease does.
        const room = ok && this.pool.size + this.others < this.capacity;
        const leaseId = room ? `lease_${this.nextId++}` : null;
        if (leaseId !== null) {
          this.pool.set(leaseId, null);
          this.granted.add(leaseId);
        }
        this.apply({ type: 'acquired', leaseId });
        return;
      }
      case 'taskArrives': {
        if (this.stopping) return; // the worker polls no more
        const permit = this.pick(
          this.permits.filter((p) => p.state === 'polling'),
          pick,
        );
        if (!permit) return;
        permit.state = 'used';
        this.apply({ type: 'markUsed' });
        return;
      }
      case 'activityStarts': {
        const permit = this.pick(
          this.permits.filter((p) => p.state === 'used'),
          pick,
        );
        if (!permit) return;
        if (this.stopped) {
          // The worker has finished before its dispatcher stops; an activity starting even later finds no lease.
          expect(() => this.apply({ type: 'claim', jobId: 'too late' })).toThrow(/no GPU slot lease/);
          return this.release(permit);
        }
        if (this.stopping) return; // its tasks have all started by then (a claim now would re-create a lease given back)
        const jobId = `job_${this.nextId++}`;
        const [claim] = this.apply({ type: 'claim', jobId });
        if (claim?.type !== 'claim') throw new Error('a claim named no lease');
        // The pool admits the claim if fewer jobs than its capacity run (`ok`: a resumed job, counted anyway), unless the
        // query fails (one in five): either way a refused claim's task goes back to the queue.
        const running = [...this.pool.values()].filter((job) => job !== null).length;
        if (pick % 5 !== 0 && (ok || running < this.capacity)) {
          this.pool.set(claim.leaseId, jobId); // an upsert: a lease lost to expiry comes back
          permit.state = 'running';
          permit.claimed = { leaseId: claim.leaseId, jobId };
        } else {
          // Handed back to the queue: the lease is idle again, and the SDK releases the permit.
          this.apply({ type: 'claimFailed', leaseId: claim.leaseId });
          this.release(permit);
        }
        return;
      }
      case 'activityEnds': {
        const permit = this.pick(
          this.permits.filter((p) => p.state === 'running'),
          pick,
        );
        if (!permit?.claimed) return;
        const { leaseId } = permit.claimed;
        permit.claimed = undefined;
        this.apply({ type: 'unclaim', leaseId });
        this.release(permit);
        return;
      }
      case 'pollEndsEmpty': {
        const permit = this.pick(
          this.permits.filter((p) => p.state === 'polling'),
          pick,
        );
        if (permit) this.release(permit);
        return;
      }
      case 'giveBackWritten': {
        const leaseId = this.givingBack.splice(pick % Math.max(1, this.givingBack.length), 1)[0];
        if (leaseId === undefined) return;
        this.pool.delete(leaseId);
        this.apply({ type: 'changed' });
        return;
      }
      case 'changed':
        this.apply({ type: 'changed' });
        return;
      case 'otherDispatcher':
        if (ok && this.pool.size + this.others < this.capacity) this.others++;
        else if (!ok && this.others > 0) {
          this.others--;
          this.apply({ type: 'changed' }); // its release notifies every dispatcher
        }
        return;
      case 'leaseLost': {
        // The dispatcher stalled past the TTL: the pool lost one of its leases; the next renewal finds out.
        const leaseId = this.pick([...this.pool.keys()], pick);
        if (leaseId === undefined) return;
        this.pool.delete(leaseId);
        this.apply({ type: 'renewed', before: [...this.book.view.held.keys()], kept: new Set(this.pool.keys()) });
        return;
      }
      case 'renewal':
        this.apply({ type: 'renewed', before: [...this.book.view.held.keys()], kept: new Set(this.pool.keys()) });
        return;
      case 'capacity':
        // Half the time down to one slot: claims of slots reserved under the old number are then refused.
        this.capacity = ok ? 1 : 1 + (pick % 4);
        this.apply({ type: 'changed' });
        return;
      case 'stop':
        if (this.stopping) return;
        this.stopping = true;
        this.apply({ type: 'stop' });
        if (this.waiting.length > 0) throw new Error('stop left reservations waiting');
        return;
      case 'stopped':
        if (!this.stopping || this.stopped) return;
        this.stopped = true;
        this.granted.clear();
        this.apply({ type: 'stopped' });
        return;
      case 'crash':
        // The process dies: its book is gone with it, its leases expire from the pool, and a new dispatcher starts empty.
        this.pool.clear();
        this.book = new GpuSlotBook(this.maxIdle);
        Object.assign(this, { granted: new Set(), waiting: [], permits: [], acquisitionInFlight: false, changedDuringAcquisition: false, givingBack: [], stopping: false, stopped: false });
        if (this.book.view.held.size !== 0) throw new Error('a new dispatcher starts holding leases');
        return;
    }
  }

  /** The SDK gives back a permit no activity runs on. */
  releaseAny(): void {
    if (this.permits[0]) this.release(this.permits[0]);
  }

  private release(permit: Permit): void {
    this.permits = this.permits.filter((p) => p !== permit);
    const busyBefore = [...this.book.view.held].filter(([, job]) => job !== null);
    const heldBefore = this.book.view.held.size;
    const effects = this.apply({ type: 'release', leaseId: permit.leaseId, used: permit.state !== 'polling' });
    if (this.stopping) return;
    // A release frees exactly one lease, and never one a running job is on.
    if (this.book.view.held.size !== heldBefore - 1) throw new Error('a release did not free exactly one lease');
    const [givenBack] = effects.filter((e) => e.type === 'giveBack');
    if (givenBack?.type === 'giveBack' && busyBefore.some(([id]) => id === givenBack.leaseId)) {
      throw new Error(`a release gave back ${givenBack.leaseId}, which a running job is on`);
    }
  }
}

describe('the GPU slot supplier’s bookkeeping', () => {
  test('holds for any sequence of SDK calls and lease events: leases granted, one per permit, few idle, released one at a time', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), fc.integer({ min: 1, max: 4 }), actions(300), (maxIdle, capacity, actions) => {
        const run = new Run(maxIdle, capacity);
        for (const a of actions) run.step(a);
      }),
      { numRuns: 500 },
    );
  });

  test('after a stop, nothing is held and a lease acquired meanwhile goes straight back', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4 }), actions(100), (maxIdle, actions) => {
        const run = new Run(maxIdle, 4);
        for (const a of actions) if (a.kind !== 'crash') run.step(a);
        run.step({ kind: 'stop', pick: 0, ok: true });
        run.step({ kind: 'answerAcquisition', pick: 0, ok: true });
        run.step({ kind: 'stopped', pick: 0, ok: true });
        expect(run.book.view).toMatchObject({ held: new Map(), waiting: [], acquiring: false, stopped: true });
        // Whatever the worker still gives back afterwards changes nothing, and the pool ends with none of ours.
        while (run.permits.some((p) => p.state === 'running')) run.step({ kind: 'activityEnds', pick: 0, ok: true });
        while (run.permits.length > 0) run.releaseAny();
        while (run.givingBack.length > 0) run.step({ kind: 'giveBackWritten', pick: 0, ok: true });
        expect(run.book.view.held).toEqual(new Map());
        expect(run.pool.size).toBe(0);
      }),
      { numRuns: 300 },
    );
  });

  test('a change during an acquisition that found the pool full makes it try again at once', () => {
    const book = new GpuSlotBook(2);
    expect(book.apply({ type: 'reserve', waiter: 1 })).toEqual([{ type: 'acquire' }]);
    expect(book.apply({ type: 'changed' })).toEqual([]); // noted: one acquisition at a time
    expect(book.apply({ type: 'acquired', leaseId: null })).toEqual([{ type: 'acquire' }]);
    expect(book.apply({ type: 'acquired', leaseId: null })).toEqual([]); // no change meanwhile: wait for one
    expect(book.view.acquiring).toBe(false);
    expect(book.apply({ type: 'changed' })).toEqual([{ type: 'acquire' }]);
  });

  test('grants go to reservations oldest first, up to maxIdle leases held for waiting polls', () => {
    const book = new GpuSlotBook(2);
    for (const waiter of [1, 2, 3]) book.apply({ type: 'reserve', waiter });
    expect(book.apply({ type: 'acquired', leaseId: 'a' })).toEqual([{ type: 'grant', waiter: 1, leaseId: 'a' }, { type: 'acquire' }]);
    expect(book.apply({ type: 'acquired', leaseId: 'b' })).toEqual([{ type: 'grant', waiter: 2, leaseId: 'b' }]);
    // Two leases wait in polls: the third reservation waits until a task arrives on one of them.
    expect(book.apply({ type: 'changed' })).toEqual([]);
    expect(book.apply({ type: 'markUsed' })).toEqual([{ type: 'acquire' }]);
    expect(book.apply({ type: 'acquired', leaseId: 'c' })).toEqual([{ type: 'grant', waiter: 3, leaseId: 'c' }]);
  });

  test('a reservation abandoned while its lease was being acquired gives the lease back', () => {
    const book = new GpuSlotBook(1);
    book.apply({ type: 'reserve', waiter: 1 });
    expect(book.apply({ type: 'abandon', waiter: 1 })).toEqual([{ type: 'refuse', waiter: 1, reason: 'abandoned' }]);
    expect(book.apply({ type: 'acquired', leaseId: 'a' })).toEqual([{ type: 'giveBack', leaseId: 'a' }]);
    expect(book.snapshot()).toEqual({ held: 0, claimed: 0 });
  });

  test('a release gives back an idle lease, not the permit’s own when another job runs on it', () => {
    const book = new GpuSlotBook(2);
    book.apply({ type: 'reserve', waiter: 1 });
    book.apply({ type: 'reserve', waiter: 2 });
    book.apply({ type: 'acquired', leaseId: 'a' });
    book.apply({ type: 'acquired', leaseId: 'b' });
    book.apply({ type: 'markUsed' });
    book.apply({ type: 'markUsed' });
    // Two tasks arrive; the first claim takes lease a, the second lease b, whichever permit each came on.
    expect(book.apply({ type: 'claim', jobId: 'j1' })).toEqual([{ type: 'claim', leaseId: 'a', jobId: 'j1' }]);
    expect(book.apply({ type: 'claim', jobId: 'j2' })).toEqual([{ type: 'claim', leaseId: 'b', jobId: 'j2' }]);
    // j2 ends first, but its task came on permit a: a, still running j1, is kept, and b is given back.
    expect(book.apply({ type: 'unclaim', leaseId: 'b' })).toEqual([{ type: 'unclaim', leaseId: 'b' }]);
    expect(book.apply({ type: 'release', leaseId: 'a', used: true })).toEqual([{ type: 'giveBack', leaseId: 'b' }]);
    expect([...book.view.held]).toEqual([['a', 'j1']]);
  });

  test('a lease lost to expiry is reported, and stays held: the next claim re-creates it', () => {
    const book = new GpuSlotBook(2);
    book.apply({ type: 'reserve', waiter: 1 });
    book.apply({ type: 'acquired', leaseId: 'a' });
    expect(book.apply({ type: 'renewed', before: ['a', 'gone-meanwhile'], kept: new Set() })).toEqual([{ type: 'leasesLost', leaseIds: ['a'] }]);
    expect(book.apply({ type: 'renewed', before: ['a'], kept: new Set(['a']) })).toEqual([]);
    expect(book.snapshot()).toEqual({ held: 1, claimed: 0 });
  });

  test('a claim with no idle lease is a disagreement between the supplier and the activities', () => {
    expect(() => new GpuSlotBook(1).apply({ type: 'claim', jobId: 'j' })).toThrow(/no GPU slot lease to claim/);
  });
});
