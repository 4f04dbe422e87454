import { capacityAdmin, holdSlots, smallJob, waitForGpuTasks } from './fairness-helpers';
import { SUMMARY_MAX_AGE_MS } from '../src/api/pool-summary-cache';
import { apiClient, eventually, startStack, type Stack } from './harness';

/**
 * Admission control at the API, all state in Postgres: request rate, active jobs and daily quota per user by tier, and a
 * per-tier backlog bound that scales with live capacity. Every refusal is a 429 with a typed code, Retry-After and the
 * IETF RateLimit-Policy / RateLimit fields.
 */
describe('admission control', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({
      env: {
        GPU_SLOTS: '8',
        RATE_LIMIT_BURST: '5',
        RATE_LIMIT_PER_SECOND: '2',
        TIER_MAX_ACTIVE_JOBS: 'free:3,pro:50,enterprise:200',
        TIER_DAILY_QUOTA: 'free:100,pro:100,enterprise:4',
        // At 8 slots the free tier may queue 4 jobs, pro 400; at 1 slot, 1 and 50.
        TIER_BACKLOG_PER_SLOT: 'free:0.5,pro:50,enterprise:50',
      },
      knobs: { capacity: 50 },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  const newUser = async (tier: string) => apiClient(stack.apiUrl, (await stack.createUser(tier)).apiKey);

  /** Ends jobs that hang on the backend (each as it gets a GPU) and waits until they are over. */
  async function endHangingJobs(api: ReturnType<typeof apiClient>, ids: string[]): Promise<void> {
    const engine = stack.simulator.simulator.engine;
    await eventually(async () => {
      for (const id of ids) for (const job of engine.list(`${id}:`)) if (job.status === 'running') engine.cancel(job.id);
      const statuses = await Promise.all(ids.map(async (id) => (await api.get(id)).body.status));
      return statuses.every((s) => ['succeeded', 'failed', 'canceled', 'expired'].includes(s)) ? true : undefined;
    }, { what: 'hanging jobs to end' });
  }

  test('a burst beyond the bucket is refused as rate_limited, with Retry-After and RateLimit fields, then let through', async () => {
    const api = await newUser('pro');
    const began = Date.now();
    const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => api.submit(smallJob(`burst ${i}`))));
    const refilled = Math.floor(((Date.now() - began) / 1000) * 2); // tokens that came back while the burst lasted
    const accepted = answers.filter((a) => a.status === 202);
    const refused = answers.filter((a) => a.status === 429);
    expect(accepted.length).toBeGreaterThanOrEqual(5);
    expect(accepted.length).toBeLessThanOrEqual(5 + refilled);
    expect(refused.length).toBe(12 - accepted.length);
    expect(refused.length).toBeGreaterThan(0);
    expect(accepted[0].headers.get('ratelimit-policy')).toBe('"burst";q=5;w=3, "active";q=50;qu="concurrent-requests", "daily";q=100;w=86400');
    const refusal = refused[0];
    expect(refusal.body.error).toMatchObject({ code: 'rate_limited', details: { limit: 5 } });
    expect(Number(refusal.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(refusal.headers.get('ratelimit')).toMatch(/^"burst";r=0;t=\d+, "active";r=\d+, "daily";r=\d+;t=\d+$/);

    const later = await eventually(async () => {
      const res = await api.submit(smallJob('after the wait'));
      return res.status === 202 ? res : undefined;
    }, { timeoutMs: 5_000, intervalMs: 500, what: 'the bucket to refill' });
    expect(later.headers.get('ratelimit')).toMatch(/^"burst";r=\d+;t=\d+, /);
  });

  test('a free user with 3 jobs queued or running is refused the 4th, exactly, even when submitting concurrently', async () => {
    const api = await newUser('free');
    const answers = await Promise.all(Array.from({ length: 5 }, (_, i) => api.submit(smallJob(`busy ${i} [hang]`))));
    const accepted = answers.filter((a) => a.status === 202);
    const hanging = accepted.map((a) => a.body.id);
    expect(accepted).toHaveLength(3);
    for (const refusal of answers.filter((a) => a.status === 429)) {
      expect(refusal.body.error).toMatchObject({ code: 'too_many_active_jobs', details: { limit: 3 } });
      // A submit being written counts twice for a moment (its reservation and its row): never fewer than 3.
      expect(refusal.body.error.details.active).toBeGreaterThanOrEqual(3);
      expect(Number(refusal.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect(refusal.headers.get('ratelimit')).toContain('"active";r=0');
    }

    // One ends: there is room for one more.
    const [first] = accepted;
    await eventually(async () => stack.simulator.simulator.engine.list(`${first.body.id}:`).find((job) => job.status === 'running'));
    for (const job of stack.simulator.simulator.engine.list(`${first.body.id}:`)) stack.simulator.simulator.engine.cancel(job.id);
    await api.waitForTerminal(first.body.id);
    const next = await eventually(async () => {
      const res = await api.submit(smallJob('room again [hang]'));
      return res.status === 202 ? res : undefined;
    }, { timeoutMs: 10_000, intervalMs: 600, what: 'room for one more job' });
    await endHangingJobs(api, [...hanging, next.body.id]);
  });

  test('the daily quota refuses with daily_quota_exceeded until midnight UTC; replays are neither refused nor counted', async () => {
    const api = await newUser('enterprise');
    const body = smallJob('quota');
    const first = await api.submit(body, 'quota-1');
    expect(first.status).toBe(202);
    for (let i = 0; i < 3; i++) expect((await api.submit(body, 'quota-1')).headers.get('idempotent-replayed')).toBe('true');
    for (let i = 2; i <= 4; i++) expect((await api.submit(smallJob(`quota ${i}`))).status).toBe(202);

    const refused = await eventually(async () => {
      const res = await api.submit(smallJob('one too many'));
      return res.status === 429 && res.body.error.code !== 'rate_limited' ? res : undefined;
    }, { timeoutMs: 10_000, intervalMs: 600, what: 'the quota refusal' });
    expect(refused.body.error).toMatchObject({ code: 'daily_quota_exceeded', details: { limit: 4 } });
    const now = new Date();
    const untilMidnight = (Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1) - now.getTime()) / 1000;
    expect(Math.abs(Number(refused.headers.get('retry-after')) - untilMidnight)).toBeLessThan(10);
    expect(refused.headers.get('ratelimit')).toMatch(/"daily";r=0;t=\d+$/);

    // A replay of an accepted submit still answers with its job, even with the quota spent.
    const replay = await api.submit(body, 'quota-1');
    expect(replay.status).toBe(202);
    expect(replay.body.id).toBe(first.body.id);

    const usage = (await api.call('GET', '/v1/usage')).body;
    expect(usage).toMatchObject({
      tier: 'enterprise',
      used_today: 4,
      limits: { requests_burst: 5, requests_per_second: 2, max_active_jobs: 200, daily_quota: 4, tier_backlog_bound: 400 },
      remaining: { daily_quota: 0, active_jobs: 200 - usage.active_jobs },
      gpu_capacity: 8,
    });
  });

  test('when capacity falls, the free tier’s backlog bound trips first: capacity_exhausted for free, pro still admitted', async () => {
    const admin = capacityAdmin(stack);
    const [free1, free2, pro] = await Promise.all([newUser('free'), newUser('free'), newUser('pro')]);
    // Earlier tests' jobs are over first: this test's queue must be its own.
    await eventually(async () => {
      const [{ n }] = await stack.database.sql<{ n: number }[]>`
        select count(*)::int as n from generations g join gpu_queue_entries e on e.job_id = g.id
        where e.pool = ${stack.config.dispatch.pool} and g.status_rank < 2`;
      return n === 0 ? true : undefined;
    }, { what: 'earlier jobs to end' });
    await admin.set(1);
    try {
      // The API reads the capacity again within two seconds (queue-position.ts keeps its estimate a second, then reads
      // it again behind the callers it answers): the bound below is the one at one slot only once it has.
      await eventually(async () => ((await free2.call('GET', '/v1/usage')).body.gpu_capacity === 1 ? true : undefined), { what: 'the API to see one slot' });
      const gate = await holdSlots(stack, 1);
      // One free job waits: at one slot that is the free tier's whole bound (0.25 per slot, at least 1).
      const waiting = await free1.submit(smallJob('free, queued'));
      expect(waiting.status).toBe(202);
      await waitForGpuTasks(stack, [waiting.body.id]);
      // Alone in the queue once the API's pool summary was read after the gate job left it (at most a second later).
      const alone = await eventually(
        async () => {
          const { body } = await free1.get(waiting.body.id);
          return body.queue_position === 1 ? body : undefined;
        },
        { timeoutMs: 15 * SUMMARY_MAX_AGE_MS, what: 'the waiting job at queue position 1' },
      );
      expect(alone.status).toBe('queued');

      const refused = await free2.submit(smallJob('free, one too many'));
      expect(refused.status).toBe(429);
      expect(refused.body.error).toMatchObject({ code: 'capacity_exhausted', details: { tier: 'free', backlog: 1, bound: 1, capacity: 1 } });
      expect(Number(refused.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      expect((await pro.submit(smallJob('pro, still welcome'))).status).toBe(202);
      expect((await free2.call('GET', '/v1/usage')).body.remaining.tier_backlog).toBe(0);

      gate.release();
      await free1.waitForTerminal(waiting.body.id);
      expect((await free2.submit(smallJob('free, room again'))).status).toBe(202);
    } finally {
      await admin.set(null);
    }
  });
});
