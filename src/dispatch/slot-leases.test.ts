import { randomBytes } from 'node:crypto';
import { useRunDatabase } from '../../test/run-database';
import { ensurePool, readCapacity, readSlotUse, reportBackendCapacity, setAdminCapacity } from './capacity';
import { GPU_SLOTS_CHANNEL } from './capacity';
import { acquireSlotLease, claimSlotLease, releaseDispatcherLeases, releaseSlotLease, renewSlotLeases, unclaimSlotLease, type LeaseRef } from './slot-leases';

/** The lease SQL against the run's real Postgres; each test has a pool of its own. */
describe('GPU slot leases in Postgres', () => {
  const database = useRunDatabase({ max: 12 });

  const newPool = () => `pool-${randomBytes(4).toString('hex')}`;
  const lease = (pool: string, dispatcherId: string, ttlMs = 10_000): LeaseRef => ({
    pool,
    dispatcherId,
    leaseId: `lease_${randomBytes(6).toString('hex')}`,
    ttlMs,
  });

  test('dispatchers racing for slots together never hold more leases than the capacity', async () => {
    const pool = newPool();
    await ensurePool(database.sql, pool, 3);
    const attempts = Array.from({ length: 12 }, (_, i) => acquireSlotLease(database.sql, lease(pool, `dispatcher-${i % 3}`)));
    const granted = (await Promise.all(attempts)).filter(Boolean);
    expect(granted).toHaveLength(3);
    expect(await readSlotUse(database.sql, pool)).toEqual({ leased: 3, running: 0 });
  });

  test('a released slot can be taken again; a pool without a row grants nothing', async () => {
    const pool = newPool();
    expect(await acquireSlotLease(database.sql, lease(pool, 'd1'))).toBe(false);
    await ensurePool(database.sql, pool, 1);
    const first = lease(pool, 'd1');
    expect(await acquireSlotLease(database.sql, first)).toBe(true);
    expect(await acquireSlotLease(database.sql, lease(pool, 'd2'))).toBe(false);
    await releaseSlotLease(database.sql, first.leaseId);
    expect(await acquireSlotLease(database.sql, lease(pool, 'd2'))).toBe(true);
  });

  test('an acquisition that finds the pool full answers at once, without waiting for the pool\'s lock', async () => {
    const pool = newPool();
    await ensurePool(database.sql, pool, 1);
    expect(await acquireSlotLease(database.sql, lease(pool, 'd1'))).toBe(true);
    // Another dispatcher holds the pool's lock (a claim under way) until this test lets it go.
    let letGo = () => {};
    const held = new Promise<void>((resolve) => (letGo = resolve));
    const locked = new Promise<void>((resolve) => {
      void database.sql.begin(async (tx) => {
        await tx`select 1 from gpu_capacity where pool = ${pool} for update`;
        resolve();
        await held;
      });
    });
    await locked;
    try {
      const answer = await Promise.race([acquireSlotLease(database.sql, lease(pool, 'd2')), new Promise((r) => setTimeout(() => r('waited'), 2_000))]);
      expect(answer).toBe(false);
    } finally {
      letGo();
    }
  });

  test('a release tells the waiting dispatchers; an unclaim, which frees no slot, does not', async () => {
    const pool = newPool();
    await ensurePool(database.sql, pool, 1);
    const heard: string[] = [];
    const { unlisten } = await database.sql.listen(GPU_SLOTS_CHANNEL, (payload) => payload === pool && heard.push(payload));
    try {
      const held = lease(pool, 'd1');
      expect(await acquireSlotLease(database.sql, held)).toBe(true);
      expect(await claimSlotLease(database.sql, held, 'job-u', false)).toBe(true);
      await unclaimSlotLease(database.sql, held.leaseId);
      await releaseSlotLease(database.sql, held.leaseId);
      const deadline = Date.now() + 5_000;
      while (heard.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      await new Promise((r) => setTimeout(r, 200)); // an unclaim's notification would have arrived before the release's
      expect(heard).toEqual([pool]);
    } finally {
      await unlisten();
    }
  });

  test('a dead dispatcher leaves no permanent lease: its leases expire and are reclaimed', async () => {
    const pool = newPool();
    await ensurePool(database.sql, pool, 2);
    expect(await acquireSlotLease(database.sql, lease(pool, 'dead', 300))).toBe(true);
    expect(await acquireSlotLease(database.sql, lease(pool, 'dead', 300))).toBe(true);
    expect(await acquireSlotLease(database.sql, lease(pool, 'alive'))).toBe(false);
    // The dead one never renews; the live one's renewal keeps its own (none yet) and leaves the others to expire.
    const deadline = Date.now() + 5_000;
    let reclaimed = false;
    while (!reclaimed && Date.now() < deadline) {
      reclaimed = await acquireSlotLease(database.sql, lease(pool, 'alive'));
      if (!reclaimed) await new Promise((r) => setTimeout(r, 100));
    }
    expect(reclaimed).toBe(true);
    const [{ n }] = await database.sql<{ n: number }[]>`select count(*)::int as n from gpu_slot_leases where dispatcher_id = 'dead'`;
    expect(n).toBe(0);
  });

  test('renewal keeps a holder’s leases a TTL ahead and reports those it lost; stopping gives the rest back', async () => {
    const pool = newPool();
    await ensurePool(database.sql, pool, 2);
    const a = lease(pool, 'holder', 400);
    const b = lease(pool, 'holder', 400);
    await acquireSlotLease(database.sql, a);
    await acquireSlotLease(database.sql, b);
    const expiries = async () =>
      Object.fromEntries(
        (await database.sql<{ id: string; at: number }[]>`
          select id, extract(epoch from expires_at)::float8 * 1000 as at from gpu_slot_leases where dispatcher_id = 'holder'`).map((r) => [r.id, r.at]),
      );
    const before = await expiries();

    // Renewed for a minute: each lease now ends a minute after the renewal, later than the 400 ms it was taken for.
    expect(await renewSlotLeases(database.sql, 'holder', 60_000)).toEqual(new Set([a.leaseId, b.leaseId]));
    const after = await expiries();
    for (const id of [a.leaseId, b.leaseId]) expect(after[id] - before[id]).toBeGreaterThanOrEqual(60_000 - 400);
    expect(await acquireSlotLease(database.sql, lease(pool, 'other'))).toBe(false);

    // One expires (as it would in a pause longer than the TTL) and another dispatcher takes its slot: the renewal says so.
    await database.sql`update gpu_slot_leases set expires_at = now() - interval '1 millisecond' where id = ${b.leaseId}`;
    expect(await acquireSlotLease(database.sql, lease(pool, 'other'))).toBe(true);
    expect(await renewSlotLeases(database.sql, 'holder', 60_000)).toEqual(new Set([a.leaseId]));

    expect(await releaseDispatcherLeases(database.sql, 'holder')).toBe(1);
    expect(await readSlotUse(database.sql, pool)).toEqual({ leased: 1, running: 0 });
  });

  test('after capacity falls, jobs are claimed only below the new number; a resumed job is counted anyway', async () => {
    const pool = newPool();
    await ensurePool(database.sql, pool, 4);
    const leases = Array.from({ length: 4 }, () => lease(pool, 'd1'));
    for (const l of leases) expect(await acquireSlotLease(database.sql, l)).toBe(true);
    expect(await claimSlotLease(database.sql, leases[0], 'job-0', false)).toBe(true);
    expect(await claimSlotLease(database.sql, leases[1], 'job-1', false)).toBe(true);

    await setAdminCapacity(database.sql, pool, 2, 4);
    // Two leases were reserved under the old number: their tasks must wait, not run.
    expect(await claimSlotLease(database.sql, leases[2], 'job-2', false)).toBe(false);
    expect(await claimSlotLease(database.sql, leases[3], 'job-3', true)).toBe(true);
    expect(await readSlotUse(database.sql, pool)).toEqual({ leased: 4, running: 3 });

    await releaseSlotLease(database.sql, leases[0].leaseId);
    expect(await claimSlotLease(database.sql, leases[2], 'job-2', false)).toBe(false); // 2 still run: job-1, job-3
    await releaseSlotLease(database.sql, leases[1].leaseId);
    expect(await claimSlotLease(database.sql, leases[2], 'job-2', false)).toBe(true);
  });

  test('a job resumed on another dispatcher takes its slot along: it is counted once', async () => {
    const pool = newPool();
    await ensurePool(database.sql, pool, 3);
    const dead = lease(pool, 'dead');
    const alive = lease(pool, 'alive');
    await acquireSlotLease(database.sql, dead);
    await acquireSlotLease(database.sql, alive);
    expect(await claimSlotLease(database.sql, dead, 'job-x', false)).toBe(true);
    expect(await claimSlotLease(database.sql, alive, 'job-x', true)).toBe(true);
    expect(await readSlotUse(database.sql, pool)).toEqual({ leased: 1, running: 1 });
  });

  test('live capacity is the smaller of the operator’s and the backend’s numbers, else the configured one', async () => {
    const pool = newPool();
    expect((await ensurePool(database.sql, pool, 4)).capacity).toBe(4);
    expect(await reportBackendCapacity(database.sql, pool, 6)).toBe(true);
    expect(await reportBackendCapacity(database.sql, pool, 6)).toBe(false); // unchanged: not written again
    expect((await readCapacity(database.sql, pool))?.capacity).toBe(6);
    expect((await setAdminCapacity(database.sql, pool, 3, 4)).capacity).toBe(3);
    expect(await reportBackendCapacity(database.sql, pool, 2)).toBe(true);
    expect((await readCapacity(database.sql, pool))?.capacity).toBe(2);
    expect((await setAdminCapacity(database.sql, pool, null, 4)).capacity).toBe(2);
  });
});
