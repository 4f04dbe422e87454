import { apiClient, startStack, type Stack } from './harness';

/**
 * POST /v1/generations/:id/retry against the real service: a new job with the earlier job's request, linked by
 * retry_of; admitted like a submit (same refusals, same headers); idempotent with its own Idempotency-Key.
 */
describe('rerun: POST /v1/generations/:id/retry', () => {
  let stack: Stack;

  beforeAll(async () => {
    stack = await startStack({
      env: {
        // A free user gets 10 credits and one active job; pro keeps the defaults.
        CREDIT_GRANTS: 'free:10,pro:20000,enterprise:200000',
        TIER_MAX_ACTIVE_JOBS: 'free:1,pro:50,enterprise:200',
      },
    });
  });
  afterAll(async () => {
    await stack?.close();
  });

  const newUser = async (tier: string) => apiClient(stack.apiUrl, (await stack.createUser(tier)).apiKey);
  const retry = (api: ReturnType<typeof apiClient>, id: string, key?: string) =>
    api.call('POST', `/v1/generations/${id}/retry`, undefined, key ? { 'idempotency-key': key } : {});
  const rerunsOf = async (id: string) =>
    (await stack.database.sql<{ id: string }[]>`select id from generations where retry_of = ${id} order by created_at`).map((r) => r.id);

  test('makes a new job with the same request, linked by retry_of, answered like a submit; the new job runs', async () => {
    const api = await newUser('pro');
    const request = {
      prompt: 'a lighthouse in a storm',
      duration_seconds: 2,
      resolution: '480p',
      aspect_ratio: '9:16',
      seed: 42,
      metadata: { b: '2', a: '1' },
    };
    const first = await api.submit(request);
    expect(first.status).toBe(202);
    await api.waitForTerminal(first.body.id);

    const rerun = await retry(api, first.body.id);
    expect(rerun.status).toBe(202);
    expect(rerun.body.id).not.toBe(first.body.id);
    expect(rerun.headers.get('location')).toBe(`/v1/generations/${rerun.body.id}`);
    expect(rerun.headers.get('ratelimit-policy')).toContain('"burst"');
    expect(rerun.headers.get('idempotent-replayed')).toBeNull();
    expect(rerun.body).toMatchObject({ status: 'queued', retry_of: first.body.id, attempt: 0, video_url: null });
    for (const field of ['prompt', 'duration_seconds', 'resolution', 'aspect_ratio', 'seed', 'webhook_url', 'metadata'] as const) {
      expect({ field, value: rerun.body[field] }).toEqual({ field, value: first.body[field] });
    }

    const ended = await api.waitForTerminal(rerun.body.id);
    expect(ended).toMatchObject({ status: 'succeeded', retry_of: first.body.id });
    expect((await api.get(first.body.id)).body.retry_of).toBeNull();
    const listed = (await api.list('?limit=10')).body.data as Array<{ id: string; retry_of: string | null }>;
    expect(listed.find((g) => g.id === rerun.body.id)?.retry_of).toBe(first.body.id);
    expect(await rerunsOf(first.body.id)).toEqual([rerun.body.id]);

    // A rerun of a rerun links to the rerun, not to the first.
    const again = await retry(api, rerun.body.id);
    expect(again.status).toBe(202);
    expect(again.body.retry_of).toBe(rerun.body.id);
  });

  test('with an Idempotency-Key the same call replays the same job; without one each call is a new job', async () => {
    const api = await newUser('pro');
    const first = await api.submit({ prompt: 'a paper boat on a river', duration_seconds: 1, resolution: '480p' });
    const keyed = await retry(api, first.body.id, 'rerun-key-1');
    const replayed = await retry(api, first.body.id, 'rerun-key-1');
    expect(keyed.status).toBe(202);
    expect(replayed.status).toBe(202);
    expect(replayed.body.id).toBe(keyed.body.id);
    expect(replayed.headers.get('idempotent-replayed')).toBe('true');
    expect(await rerunsOf(first.body.id)).toEqual([keyed.body.id]);

    const a = await retry(api, first.body.id);
    const b = await retry(api, first.body.id);
    expect(new Set([keyed.body.id, a.body.id, b.body.id]).size).toBe(3);
    expect((await rerunsOf(first.body.id)).sort()).toEqual([keyed.body.id, a.body.id, b.body.id].sort());

    // One key names one call: a rerun of another job, or a submit, under it is refused.
    const other = await api.submit({ prompt: 'a paper boat on a river', duration_seconds: 1, resolution: '480p' });
    const reusedForOther = await retry(api, other.body.id, 'rerun-key-1');
    expect(reusedForOther.status).toBe(422);
    expect(reusedForOther.body.error.code).toBe('idempotency_key_reused');
    const submitKey = await api.submit({ prompt: 'a paper boat on a river', duration_seconds: 1, resolution: '480p' }, 'submit-key-1');
    expect(submitKey.status).toBe(202);
    const reusedForRerun = await retry(api, first.body.id, 'submit-key-1');
    expect(reusedForRerun.status).toBe(422);
    expect(reusedForRerun.body.error.code).toBe('idempotency_key_reused');
    expect(await rerunsOf(other.body.id)).toEqual([]);

    const badKey = await retry(api, first.body.id, 'has space');
    expect(badKey.status).toBe(400);
    expect(badKey.body.error.code).toBe('invalid_idempotency_key');
  });

  test("another user's job, or none, is 404 and makes nothing", async () => {
    const owner = await newUser('pro');
    const stranger = await newUser('pro');
    const job = await owner.submit({ prompt: 'a fox in the snow', duration_seconds: 1, resolution: '480p' });
    const theirs = await retry(stranger, job.body.id);
    expect(theirs.status).toBe(404);
    expect(theirs.body.error.code).toBe('not_found');
    const unknown = await retry(stranger, 'gen_nothing_here');
    expect(unknown.status).toBe(404);
    expect(await rerunsOf(job.body.id)).toEqual([]);
    expect((await stranger.list()).body.data).toEqual([]);
  });

  test('is refused by admission exactly as a submit would be: active jobs (429) and credits (402)', async () => {
    // One active job at most: a rerun of the hanging one is the second.
    const busy = await newUser('free');
    const hanging = await busy.submit({ prompt: 'a clock that never stops [hang]', duration_seconds: 1, resolution: '480p' });
    expect(hanging.status).toBe(202);
    const [rerun, submit] = [await retry(busy, hanging.body.id), await busy.submit({ prompt: 'another', duration_seconds: 1, resolution: '480p' })];
    expect(rerun.status).toBe(429);
    expect(rerun.body.error).toEqual(submit.body.error);
    expect(rerun.body.error.code).toBe('too_many_active_jobs');
    expect(Number(rerun.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(rerun.headers.get('ratelimit-policy')).toBe(submit.headers.get('ratelimit-policy'));
    expect(await rerunsOf(hanging.body.id)).toEqual([]);
    await busy.call('POST', `/v1/generations/${hanging.body.id}/cancel`);

    // 10 credits: a 6-credit job runs, its rerun cannot be paid for.
    const poor = await newUser('free');
    const job = await poor.submit({ prompt: 'six seconds of rain', duration_seconds: 6, resolution: '480p' });
    expect(job.status).toBe(202);
    expect((await poor.waitForTerminal(job.body.id)).status).toBe('succeeded');
    const unpaid = await retry(poor, job.body.id);
    expect(unpaid.status).toBe(402);
    expect(unpaid.body.error).toMatchObject({ code: 'insufficient_credits', details: { needed: 6, available: 4 } });
    expect(await rerunsOf(job.body.id)).toEqual([]);
  });
});
