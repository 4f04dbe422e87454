import { jainIndex } from './scheduling-metrics';
import {
  capacityAdmin,
  dispatchOrder,
  gpuTasksTaken,
  holdSlots,
  ownersOf,
  submitMany,
  UNLIMITED_ADMISSION,
  waitForBackendEnds,
  waitForGpuBacklog,
  waitForGpuTasks,
} from './fairness-helpers';
import { SUMMARY_MAX_AGE_MS } from '../src/api/pool-summary-cache';
import { apiClient, eventually, startStack, type Stack } from './harness';

/**
 * The `gpu` queue's order comes from Temporal's fairness keys (user id, weighted by tier), not from a queue of ours: with
 * one slot, floods wait in Temporal's backlog while our dispatcher holds at most its one lease, and the order in which
 * jobs reach the backend interleaves users by weight.
 */
describe('GPU dispatch is fair, and the fairness is Temporal’s', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      env: { ...UNLIMITED_ADMISSION, GPU_SLOTS: '1', TIER_WEIGHTS: 'free:1,pro:3,enterprise:8', SIM_P50_MS: '80', SIM_P99_MS: '160' },
      knobs: { capacity: 50 },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  async function users(tiers: string[]) {
    return Promise.all(tiers.map(async (tier) => apiClient(stack.apiUrl, (await stack.createUser(tier)).apiKey)));
  }

  test('a user who flooded the queue first is interleaved with the one who came after: A B A B …', async () => {
    const [a, b] = await users(['pro', 'pro']);
    const gate = await holdSlots(stack, 1);
    const aJobs = await submitMany(a, 10, { prompt: 'A' });
    await waitForGpuTasks(stack, aJobs);
    const bJobs = await submitMany(b, 4, { prompt: 'B' });
    // The backlog is Temporal's: its own count reaches all 14, and not one task was taken by a dispatcher to wait on our
    // side. Our side holds one lease, the gate job's, and it carries that job.
    await waitForGpuBacklog(stack, 14);
    expect(await gpuTasksTaken(stack, [...aJobs, ...bJobs])).toEqual([]);
    expect(await capacityAdmin(stack).get()).toMatchObject({ leased_slots: 1, running_jobs: 1 });

    gate.release();
    await waitForBackendEnds(stack, [...aJobs, ...bJobs]);
    const order = dispatchOrder(stack, ownersOf({ A: aJobs, B: bJobs })).join('');
    // B's four jobs go out one by one between A's, not after A's ten.
    expect(order.slice(0, 8)).toMatch(/^(AB){4}$|^(BA){4}$/);
    expect(order.slice(8)).toBe('AAAAAA');
  });

  test('equal users share the slot equally while all are backlogged (Jain’s index ≥ 0.95)', async () => {
    const clients = await users(['pro', 'pro', 'pro', 'pro']);
    const gate = await holdSlots(stack, 1);
    const groups: Record<string, string[]> = {};
    for (const [i, api] of clients.entries()) groups[`u${i}`] = await submitMany(api, 6, { prompt: `u${i}` });
    await waitForGpuTasks(stack, Object.values(groups).flat());
    gate.release();
    await waitForBackendEnds(stack, Object.values(groups).flat());
    // All four stay backlogged through the first 20 dispatches (each has 6).
    const contended = dispatchOrder(stack, ownersOf(groups)).slice(0, 20);
    const counts = Object.keys(groups).map((user) => contended.filter((u) => u === user).length);
    expect(jainIndex(counts)).toBeGreaterThanOrEqual(0.95);
  });

  test('a pro user (weight 3) gets about three dispatches for each of a free user’s (weight 1)', async () => {
    const [free, pro] = await users(['free', 'pro']);
    const gate = await holdSlots(stack, 1);
    // The free user floods first: weight, not arrival, decides the share.
    const freeJobs = await submitMany(free, 10, { prompt: 'F' });
    const proJobs = await submitMany(pro, 24, { prompt: 'P' });
    await waitForGpuTasks(stack, [...freeJobs, ...proJobs]);
    gate.release();
    await waitForBackendEnds(stack, [...freeJobs, ...proJobs]);
    // Both stay backlogged through the first 24 dispatches (the free user has 10, the pro user 24).
    const contended = dispatchOrder(stack, ownersOf({ F: freeJobs, P: proJobs })).slice(0, 24);
    const ratio = contended.filter((u) => u === 'P').length / contended.filter((u) => u === 'F').length;
    expect(ratio).toBeGreaterThanOrEqual(3 * 0.8);
    expect(ratio).toBeLessThanOrEqual(3 * 1.2);
  });

  test('queued jobs show their queue position and an ETA from recent completions; others show null', async () => {
    const [a, b] = await users(['pro', 'pro']);
    // A few completions first, so the pool has a recent service rate to give ETAs from.
    await Promise.all((await submitMany(a, 2, { prompt: 'warm-up' })).map((id) => a.waitForTerminal(id)));
    const gate = await holdSlots(stack, 1);
    // One at a time: positions follow creation order.
    const aJobs = await submitMany(a, 6, { prompt: 'A', concurrency: 1 });
    const bJobs = await submitMany(b, 2, { prompt: 'B', concurrency: 1 });
    await waitForGpuTasks(stack, [...aJobs, ...bJobs]);

    // A queued first, B's two go in between A's first three: A B A B A A A A. The other users' queues come from the API's
    // pool summary, which is reused for SUMMARY_MAX_AGE_MS, or ten of its reads' durations when longer (a loaded machine):
    // one read while the gate job still queued counts it ahead of everyone until then. So the positions must be these
    // once such an age has passed.
    const expected = [1, 3, 5, 6, 7, 8];
    let seen: unknown[] = [];
    const aPositions = await eventually(
      async () => {
        const bodies = await Promise.all(aJobs.map(async (id) => (await a.get(id)).body));
        seen = bodies.map((g) => g.queue_position);
        return JSON.stringify(seen) === JSON.stringify(expected) ? bodies : undefined;
      },
      { timeoutMs: 15 * SUMMARY_MAX_AGE_MS, what: 'A’s queue positions' },
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}; last read ${JSON.stringify(seen)}, expected ${JSON.stringify(expected)}`);
    });
    expect((await b.get(bJobs[0])).body.queue_position).toBe(2);
    expect((await b.get(bJobs[1])).body.queue_position).toBe(4);
    // An ETA is known and grows with the position.
    expect(aPositions[0].eta_seconds).toEqual(expect.any(Number));
    expect(aPositions[5].eta_seconds).toBeGreaterThanOrEqual(aPositions[0].eta_seconds);
    const listed = (await a.list('?status=queued&limit=100')).body.data as Array<{ id: string; queue_position: number }>;
    expect(listed.map((g) => g.queue_position).sort((x, y) => x - y)).toEqual([1, 3, 5, 6, 7, 8]);

    gate.release();
    const done = await a.waitForTerminal(aJobs[0]);
    expect(done).toMatchObject({ status: 'succeeded', queue_position: null, eta_seconds: null });
    await eventually(async () => ((await a.get(aJobs[5])).body.status === 'succeeded' ? true : undefined), { what: 'the last job to end' });
  });
});
