import { capacityAdmin } from './fairness-helpers';
import { startImageServer } from './image-server';
import { apiClient, eventually, startStack, type Stack } from './harness';

/**
 * POST /v1/generations/estimate against the real service: a submit's price and admission now, with nothing written.
 * Each refusal is compared with what a real submit gets right after: the same code and message.
 */
describe('estimate: POST /v1/generations/estimate', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({
      env: {
        // Three submits at once per user, then one every 20 s: a bucket emptied in a test stays empty through it.
        RATE_LIMIT_BURST: '3',
        RATE_LIMIT_PER_SECOND: '0.05',
        ESTIMATE_BURST: '5',
        ESTIMATES_PER_SECOND: '0.05',
        CREDIT_GRANTS: 'free:10,pro:20000,enterprise:200000',
        TIER_MAX_ACTIVE_JOBS: 'free:1,pro:50,enterprise:200',
        TIER_DAILY_QUOTA: 'free:100,pro:100,enterprise:2',
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  type Api = ReturnType<typeof apiClient>;
  const newUser = async (tier: string) => {
    const { userId, apiKey } = await stack.createUser(tier);
    return { userId, api: apiClient(stack.apiUrl, apiKey) };
  };
  const estimate = (api: Api, body: unknown) => api.call('POST', '/v1/generations/estimate', body);
  const small = (prompt: string) => ({ prompt, duration_seconds: 1, resolution: '480p' });

  /** Everything a submit writes, whole tables and the user's own rows, as one comparable value. */
  async function written(userId: string) {
    const { sql } = stack.database;
    const [tables] = await sql`
      select (select count(*) from generations)::int as generations,
             (select count(*) from idempotency_keys)::int as idempotency_keys,
             (select count(*) from gpu_queue_entries)::int as gpu_queue_entries,
             (select count(*) from credit_ledger)::int as credit_ledger,
             (select count(*) from generation_events)::int as generation_events,
             (select count(*) from rate_limit_buckets)::int as rate_limit_buckets,
             (select count(*) from user_job_counts)::int as user_job_counts,
             (select count(*) from credit_accounts)::int as credit_accounts`;
    const mine = {
      generations: await sql`select id, status, updated_at::text from generations where user_id = ${userId} order by id`,
      events: await sql`select max(id)::text as newest, count(*)::int as n from generation_events where user_id = ${userId}`,
      ledger: await sql`select entry_key, amount from credit_ledger where user_id = ${userId} order by id`,
      queue: await sql`select job_id from gpu_queue_entries where user_id = ${userId} order by job_id`,
      bucket: await sql`select tokens, refilled_at::text, last_allowed from rate_limit_buckets where bucket_key = ${`user:${userId}`}`,
      counts: await sql`select active, queued, today, day::text from user_job_counts where user_id = ${userId}`,
      credits: await sql`select available, reserved, used, updated_at::text from credit_accounts where user_id = ${userId}`,
    };
    return JSON.parse(JSON.stringify({ tables, mine }));
  }

  test('answers price, admission and starting place, and changes nothing in any table a submit writes', async () => {
    const { userId, api } = await newUser('free');
    // A job first, so the user has a bucket, counts, a ledger and events for an estimate to disturb.
    const first = await api.submit(small('a first job'));
    expect(first.status).toBe(202);
    expect((await api.waitForTerminal(first.body.id)).status).toBe('succeeded');
    const before = await written(userId);

    const fits = await estimate(api, { prompt: 'six seconds of rain', duration_seconds: 6, resolution: '480p' });
    expect(fits.status).toBe(200);
    expect(fits.body).toEqual({ credits: 6, admitted: true, refusal: null, queue_position: expect.any(Number), eta_seconds: fits.body.eta_seconds });
    expect(fits.body.queue_position).toBeGreaterThanOrEqual(1);
    const tooDear = await estimate(api, { prompt: 'ten seconds of rain', duration_seconds: 10, resolution: '480p' });
    expect(tooDear.status).toBe(200);
    expect(tooDear.body).toEqual({
      credits: 10,
      admitted: false,
      refusal: { code: 'insufficient_credits', message: 'this generation costs 10 credits; 9 available' },
      queue_position: null,
      eta_seconds: null,
    });

    expect(await written(userId)).toEqual(before);

    // What the estimates said is what submits get.
    const refused = await api.submit({ prompt: 'ten seconds of rain', duration_seconds: 10, resolution: '480p' });
    expect(refused.status).toBe(402);
    expect({ code: refused.body.error.code, message: refused.body.error.message }).toEqual(tooDear.body.refusal);
    const admitted = await api.submit({ prompt: 'six seconds of rain', duration_seconds: 6, resolution: '480p' });
    expect(admitted.status).toBe(202);
    expect(admitted.body.queue_position).toBe(fits.body.queue_position);
  });

  test('takes no rate-limit token, and says rate_limited exactly when a submit would be', async () => {
    const { api } = await newUser('pro');
    for (let i = 0; i < 4; i++) expect((await estimate(api, small(`look ${i}`))).body.admitted).toBe(true);
    // The bucket of 3 is whole after four estimates.
    for (let i = 0; i < 3; i++) expect((await api.submit(small(`go ${i}`))).status).toBe(202);
    const limited = await estimate(api, small('one more'));
    expect(limited.body).toMatchObject({ admitted: false, refusal: { code: 'rate_limited' }, queue_position: null });
    const refused = await api.submit(small('one more'));
    expect(refused.status).toBe(429);
    expect({ code: refused.body.error.code, message: refused.body.error.message }).toEqual(limited.body.refusal);
  });

  test('says too_many_active_jobs and daily_quota_exceeded exactly when a submit would be', async () => {
    const busy = await newUser('free');
    const hanging = await busy.api.submit(small('a clock that never stops [hang]'));
    expect(hanging.status).toBe(202);
    const active = await estimate(busy.api, small('another'));
    expect(active.body).toMatchObject({ admitted: false, refusal: { code: 'too_many_active_jobs' } });
    const activeRefused = await busy.api.submit(small('another'));
    expect(activeRefused.status).toBe(429);
    expect({ code: activeRefused.body.error.code, message: activeRefused.body.error.message }).toEqual(active.body.refusal);
    await busy.api.call('POST', `/v1/generations/${hanging.body.id}/cancel`);

    const daily = await newUser('enterprise');
    for (let i = 0; i < 2; i++) expect((await daily.api.submit(small(`today ${i}`))).status).toBe(202);
    const quota = await estimate(daily.api, small('a third'));
    expect(quota.body).toMatchObject({ admitted: false, refusal: { code: 'daily_quota_exceeded' } });
    const quotaRefused = await daily.api.submit(small('a third'));
    expect(quotaRefused.status).toBe(429);
    expect({ code: quotaRefused.body.error.code, message: quotaRefused.body.error.message }).toEqual(quota.body.refusal);
  });

  test('a bad body is 400 as for a submit; estimates are paced per user (429 estimate_rate_limited)', async () => {
    const { api } = await newUser('pro');
    const bad = await estimate(api, { prompt: '' });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('invalid_request');
    const privateHook = await estimate(api, { prompt: 'x', webhook_url: 'http://10.0.0.1/hook' });
    expect(privateHook.status).toBe(400);
    // The 400s took none of the 5; the sixth estimate is refused.
    for (let i = 0; i < 5; i++) expect((await estimate(api, small(`look ${i}`))).status).toBe(200);
    const paced = await estimate(api, small('look again'));
    expect(paced.status).toBe(429);
    expect(paced.body.error.code).toBe('estimate_rate_limited');
    expect(Number(paced.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    // Submits are not paced by it.
    expect((await api.submit(small('still fine'))).status).toBe(202);
  });

  test('a paced estimate naming an input image is refused before the image is fetched', async () => {
    const images = await startImageServer();
    try {
      const { api } = await newUser('pro');
      const withImage = { ...small('a cat that starts to dance'), input_reference: `${images.url}/cat.png` };
      expect((await estimate(api, withImage)).status).toBe(200);
      const fetched = images.requests.length;
      expect(fetched).toBeGreaterThan(0);
      for (let i = 0; i < 4; i++) expect((await estimate(api, small(`look ${i}`))).status).toBe(200);
      const paced = await estimate(api, withImage);
      expect(paced).toMatchObject({ status: 429, body: { error: { code: 'estimate_rate_limited' } } });
      expect(images.requests.length).toBe(fetched);
    } finally {
      await images.close();
    }
  });

  test("says capacity_exhausted exactly when a submit would be (the tier's backlog at its bound)", async () => {
    // The earlier tests' jobs are dispatched first: one still queued would be the tier's backlog already.
    await eventually(
      async () => {
        const [row] = await stack.database.sql<{ n: number }[]>`
          select count(*)::int as n from generations g join gpu_queue_entries e on e.job_id = g.id
          where g.status_rank = 0 and e.pool = ${stack.config.dispatch.pool}`;
        return row.n === 0 ? true : undefined;
      },
      { what: 'no job of this stack still waiting for a GPU' },
    );
    const capacity = capacityAdmin(stack);
    await capacity.set(0);
    try {
      const filler = await newUser('pro');
      const { api } = await newUser('pro');
      // Capacity 0: the bound is one queued job of the tier, which this user's job is.
      expect((await filler.api.submit(small('waiting for a GPU'))).status).toBe(202);
      await eventually(async () => {
        const usage = await api.call('GET', '/v1/usage');
        return usage.body.gpu_capacity === 0 && usage.body.remaining.tier_backlog === 0 ? true : undefined;
      }, { what: 'the API to see capacity 0 and a full pro backlog' });
      const full = await estimate(api, small('one more'));
      expect(full.body).toMatchObject({ admitted: false, refusal: { code: 'capacity_exhausted' } });
      const refused = await api.submit(small('one more'));
      expect(refused.status).toBe(429);
      expect({ code: refused.body.error.code, message: refused.body.error.message }).toEqual(full.body.refusal);
    } finally {
      await capacity.set(null);
    }
  });
});
