import { capacityAdmin, dispatchOrder, holdSlots, ownersOf, submitMany, UNLIMITED_ADMISSION, waitForBackendEnds, waitForGpuTasks } from './fairness-helpers';
import { SUMMARY_MAX_AGE_MS } from '../src/api/pool-summary-cache';
import { apiClient, eventually, startStack, type Stack } from './harness';

/**
 * Priority lanes on one GPU: `priority: "batch"` jobs wait while interactive jobs of any user wait (Temporal priority
 * keys on the `gpu` queue), users share each lane fairly, a batch job costs the batch share of its price, may wait
 * longer, and counts against limits of its own.
 */
describe('priority lanes: interactive ahead of batch, fair inside each', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack({
      env: {
        ...UNLIMITED_ADMISSION,
        GPU_SLOTS: '1',
        SIM_P50_MS: '80',
        SIM_P99_MS: '160',
        MAX_QUEUE_MS: '600000',
        // The free tier's lanes have small limits of their own (the limits test); the other tiers none to speak of.
        TIER_MAX_ACTIVE_JOBS: 'free:1,pro:1000000,enterprise:1000000',
        TIER_MAX_ACTIVE_BATCH_JOBS: 'free:2,pro:1000000,enterprise:1000000',
      },
      knobs: { capacity: 50 },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  const newUser = async (tier = 'pro') => apiClient(stack.apiUrl, (await stack.createUser(tier)).apiKey);

  test('interactive jobs of another user start ahead of a batch backlog, which finishes once the GPU frees', async () => {
    const [a, b] = [await newUser(), await newUser()];
    const gate = await holdSlots(stack, 1);
    const batch = await submitMany(a, 8, { prompt: 'A batch', priority: 'batch', concurrency: 1 });
    await waitForGpuTasks(stack, batch);
    const interactive = await submitMany(b, 3, { prompt: 'B interactive', concurrency: 1 });
    await waitForGpuTasks(stack, interactive);

    // Positions by lane: B's interactive jobs count no batch job; A's batch jobs have all of B's ahead of them. The other
    // users' queues come from the API's pool summary, at most a second old: one read while the gate job still queued
    // counts it ahead of everyone until the next.
    const positions = (client: typeof a, ids: string[]) => Promise.all(ids.map(async (id) => (await client.get(id)).body));
    const expected = JSON.stringify({ b: [1, 2, 3], a: [4, 5, 6, 7, 8, 9, 10, 11] });
    let seen = '';
    const [bPositions, aPositions] = await eventually(
      async () => {
        const read = await Promise.all([positions(b, interactive), positions(a, batch)]);
        seen = JSON.stringify({ b: read[0].map((g) => g.queue_position), a: read[1].map((g) => g.queue_position) });
        return seen === expected ? read : undefined;
      },
      { timeoutMs: 15 * SUMMARY_MAX_AGE_MS, what: 'the queue positions by lane' },
    ).catch((err: unknown) => {
      throw new Error(`${String(err)}; last read ${seen}, expected ${expected}`);
    });
    expect(bPositions.map((g) => g.priority)).toEqual(Array(3).fill('interactive'));
    expect(aPositions.map((g) => g.priority)).toEqual(Array(8).fill('batch'));

    gate.release();
    await waitForBackendEnds(stack, [...batch, ...interactive]);
    expect(dispatchOrder(stack, ownersOf({ A: batch, B: interactive })).join('')).toBe('BBBAAAAAAAA');
    for (const id of batch) expect((await a.waitForTerminal(id)).status).toBe('succeeded');
    expect(await capacityAdmin(stack).get()).toMatchObject({ running_jobs: 0 });
  });

  test('two users share the batch lane fairly: A B A B …', async () => {
    const [a, b] = [await newUser(), await newUser()];
    const gate = await holdSlots(stack, 1);
    const aJobs = await submitMany(a, 10, { prompt: 'A', priority: 'batch' });
    await waitForGpuTasks(stack, aJobs);
    const bJobs = await submitMany(b, 4, { prompt: 'B', priority: 'batch' });
    await waitForGpuTasks(stack, bJobs);
    gate.release();
    await waitForBackendEnds(stack, [...aJobs, ...bJobs]);
    const order = dispatchOrder(stack, ownersOf({ A: aJobs, B: bJobs })).join('');
    // B's four jobs go out one by one between A's, not after A's ten.
    expect(order.slice(0, 8)).toMatch(/^(AB){4}$|^(BA){4}$/);
    expect(order.slice(8)).toBe('AAAAAA');
  });

  test('a batch job costs the batch share of its price (BATCH_PRICE_FACTOR 0.5), quoted and charged', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const body = { prompt: 'cheaper in the batch lane', duration_seconds: 5, resolution: '720p' };
    expect((await api.call('POST', '/v1/generations/estimate', body)).body.credits).toBe(10);
    expect((await api.call('POST', '/v1/generations/estimate', { ...body, priority: 'batch' })).body.credits).toBe(5);
    // An explicit interactive request is the request without the field: same price, same job under one key.
    const interactive = await api.submit({ ...body, priority: 'interactive' }, 'lane-key');
    expect((await api.submit(body, 'lane-key')).headers.get('idempotent-replayed')).toBe('true');
    const batch = await api.submit({ ...body, priority: 'batch' });
    expect(batch.status).toBe(202);
    expect(batch.body.priority).toBe('batch');
    expect((await api.waitForTerminal(batch.body.id)).status).toBe('succeeded');
    expect((await api.waitForTerminal(interactive.body.id)).priority).toBe('interactive');
    const ledger = await stack.database.sql<{ job_id: string; kind: string; amount: number }[]>`
      select job_id, kind, amount from credit_ledger where user_id = ${userId} and kind in ('reserve', 'capture') order by id`;
    expect(ledger.filter((e) => e.job_id === batch.body.id).map((e) => [e.kind, Math.abs(e.amount)])).toEqual([['reserve', 5], ['capture', 5]]);
    expect(ledger.filter((e) => e.job_id === interactive.body.id).map((e) => [e.kind, Math.abs(e.amount)])).toEqual([['reserve', 10], ['capture', 10]]);
  });

  test('a batch job may wait longer than an interactive one', async () => {
    const api = await newUser();
    const tooLong = await api.call('POST', '/v1/generations/estimate', { prompt: 'x', max_queue_seconds: 3600 });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.error.message).toMatch(/max_queue_seconds: at most 600 for the interactive lane/);
    const batch = await api.call('POST', '/v1/generations/estimate', { prompt: 'x', max_queue_seconds: 3600, priority: 'batch' });
    expect(batch.status).toBe(200);
  });

  test('batch jobs count against limits of their own: too_many_active_batch_jobs, while the interactive lane stays open', async () => {
    const api = await newUser('free');
    const gate = await holdSlots(stack, 1);
    const batch = await submitMany(api, 2, { prompt: 'free batch', priority: 'batch' });
    const third = await api.submit({ prompt: 'one batch job too many', duration_seconds: 1, resolution: '480p', priority: 'batch' });
    expect(third.status).toBe(429);
    expect(third.body.error).toMatchObject({ code: 'too_many_active_batch_jobs', message: 'a free user may have 2 batch jobs queued or running', details: { limit: 2, active: 2 } });
    expect(Number(third.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    const estimate = await api.call('POST', '/v1/generations/estimate', { prompt: 'x', duration_seconds: 1, resolution: '480p', priority: 'batch' });
    expect(estimate.body).toMatchObject({ admitted: false, refusal: { code: 'too_many_active_batch_jobs' } });

    // The interactive lane has its own limit (1 for the free tier here): the batch jobs do not count against it.
    const interactive = await api.submit({ prompt: 'interactive all the same', duration_seconds: 1, resolution: '480p' });
    expect(interactive.status).toBe(202);
    expect((await api.submit({ prompt: 'a second interactive', duration_seconds: 1, resolution: '480p' })).body.error.code).toBe('too_many_active_jobs');
    const usage = (await api.call('GET', '/v1/usage')).body;
    expect(usage).toMatchObject({ active_jobs: 3, active_batch_jobs: 2, limits: { max_active_jobs: 1, max_active_batch_jobs: 2 }, remaining: { active_jobs: 0, active_batch_jobs: 0 } });

    gate.release();
    for (const id of [...batch, interactive.body.id]) expect((await api.waitForTerminal(id)).status).toBe('succeeded');
    await eventually(async () => ((await api.call('GET', '/v1/usage')).body.active_batch_jobs === 0 ? true : undefined), { what: 'the batch count to fall' });
    expect((await api.submit({ prompt: 'room again', duration_seconds: 1, resolution: '480p', priority: 'batch' })).status).toBe(202);
  });
});
