import { Webhook } from 'standardwebhooks';
import { createReconcileActivities } from '../src/activities/reconcile';
import { admitBatch, describeBatch } from '../src/api/batch-admission';
import { createQueuePositions } from '../src/api/queue-position';
import { cancelGenerationSignal } from '../src/contracts/generation';
import { createLogger } from '../src/lib/logger';
import { creditBalance } from '../src/credits/ledger';
import { PRUNE_STEPS, retentionWindows } from '../src/retention/prune';
import { startWebhookReceiver, type WebhookReceiver } from './notification-helpers';
import { apiClient, eventually, settled, startStack, type Stack } from './harness';

type Api = ReturnType<typeof apiClient>;

/**
 * POST /v1/batches against the real service: up to 500 submit bodies admitted whole or refused whole, idempotent under
 * one key; counts that follow the items; cancel; one batch.completed notification and webhook when the last item ends.
 */
describe('batches', () => {
  let stack: Stack;
  let receiver: WebhookReceiver;

  beforeAll(async () => {
    receiver = await startWebhookReceiver();
    stack = await startStack({
      env: {
        // free: 3 active jobs and 12 credits; enterprise: room for a 500-item batch.
        CREDIT_GRANTS: 'free:12,pro:20000,enterprise:200000',
        TIER_MAX_ACTIVE_JOBS: 'free:3,pro:50,enterprise:1000',
        TIER_DAILY_QUOTA: 'free:100,pro:5000,enterprise:50000',
        TIER_BACKLOG_PER_SLOT: 'free:10,pro:50,enterprise:500',
        TIER_MAX_ACTIVE_BATCH_JOBS: 'free:4,pro:500,enterprise:2000',
        GPU_SLOTS: '8',
      },
      knobs: { capacity: 50 },
    });
  });
  afterAll(async () => {
    await stack?.close();
    await receiver?.close();
  });

  const sql = () => stack.database.sql;
  const newUser = async (tier: string) => {
    const { userId, apiKey } = await stack.createUser(tier);
    return { userId, api: apiClient(stack.apiUrl, apiKey) };
  };
  const submitBatch = (api: Api, items: unknown[], key?: string) => api.call('POST', '/v1/batches', { items }, key ? { 'idempotency-key': key } : {});
  const small = (prompt: string) => ({ prompt, duration_seconds: 1, resolution: '480p' });
  const waitForBatch = (api: Api, id: string, status: string) =>
    eventually(
      async () => {
        const res = await api.call('GET', `/v1/batches/${id}`);
        return res.body?.status === status ? res.body : undefined;
      },
      { timeoutMs: 90_000, what: `batch ${id} ${status}` },
    );
  const batchNotifications = async (batchId: string) =>
    (await sql()<{ id: string }[]>`select id from notifications where job_id = ${batchId} and event = 'batch.completed'`).length;
  const userRows = async (userId: string) => {
    const [r] = await sql()<{ jobs: number; batches: number; reserves: number; keys: number }[]>`
      select (select count(*) from generations where user_id = ${userId})::int as jobs,
             (select count(*) from batches where user_id = ${userId})::int as batches,
             (select count(*) from credit_ledger where user_id = ${userId} and kind = 'reserve')::int as reserves,
             (select count(*) from idempotency_keys where user_id = ${userId})::int as keys`;
    return r;
  };

  test('a batch is admitted whole, lists its items, replays under its key, counts its items as they end, and is announced once', async () => {
    const { userId, api } = await newUser('pro');
    const endpoint = await api.call('POST', '/v1/webhook-endpoints', { url: receiver.url, events: ['batch.completed'] });
    expect(endpoint.status).toBe(201);
    const items = Array.from({ length: 6 }, (_, i) => small(`batch item ${i}`));
    const key = `batch-${userId}`;

    const created = await submitBatch(api, items, key);
    expect(created.status).toBe(202);
    const batch = created.body;
    expect(batch).toMatchObject({ object: 'batch', status: 'in_progress', total: 6, completed_at: null });
    expect(batch.id).toMatch(/^batch_/);
    expect(created.headers.get('location')).toBe(`/v1/batches/${batch.id}`);
    expect(created.headers.get('ratelimit-policy')).toContain('"active"');
    const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);
    expect(sum(batch.counts)).toBe(6);

    // The items: generations carrying batch_id, listed by it.
    const listed = await api.list(`?batch_id=${batch.id}&limit=100`);
    expect(listed.status).toBe(200);
    expect(listed.body.data).toHaveLength(6);
    expect(listed.body.data.every((g: { batch_id: string }) => g.batch_id === batch.id)).toBe(true);
    expect(listed.body.data.map((g: { prompt: string }) => g.prompt).sort()).toEqual(items.map((i) => i.prompt).sort());
    const page = await api.list(`?batch_id=${batch.id}&limit=4`);
    const rest = await api.list(`?batch_id=${batch.id}&limit=4&cursor=${page.body.next_cursor}`);
    expect([...page.body.data, ...rest.body.data].map((g: { id: string }) => g.id).sort()).toEqual(listed.body.data.map((g: { id: string }) => g.id).sort());

    // Replay: the same batch; another body under the key, or a submit under it, is 422.
    const replayed = await submitBatch(api, items, key);
    expect(replayed.status).toBe(202);
    expect(replayed.headers.get('idempotent-replayed')).toBe('true');
    expect(replayed.body.id).toBe(batch.id);
    expect((await submitBatch(api, items.slice(1), key)).body.error.code).toBe('idempotency_key_reused');
    expect((await api.submit(small('a single submit'), key)).status).toBe(422);
    expect((await userRows(userId)).jobs).toBe(6);

    // Counts move as items end; every reading adds up to the total.
    const seen: Array<Record<string, number>> = [];
    const done = await eventually(
      async () => {
        const res = await api.call('GET', `/v1/batches/${batch.id}`);
        seen.push(res.body.counts);
        return res.body.status === 'completed' ? res.body : undefined;
      },
      { timeoutMs: 60_000, intervalMs: 50, what: 'the batch to complete' },
    );
    expect(done.counts).toEqual({ queued: 0, running: 0, succeeded: 6, failed: 0, canceled: 0, expired: 0 });
    expect(done.completed_at).not.toBeNull();
    for (const counts of seen) expect(sum(counts)).toBe(6);
    const ended = (counts: Record<string, number>) => counts.succeeded + counts.failed + counts.canceled + counts.expired;
    for (let i = 1; i < seen.length; i++) expect(ended(seen[i])).toBeGreaterThanOrEqual(ended(seen[i - 1]));

    // One batch.completed notification and one signed webhook, besides each item's own ending.
    const [delivered] = await receiver.waitFor((r) => r.some((w) => w.raw.includes(batch.id)));
    void delivered;
    expect(await settled(() => batchNotifications(batch.id))).toBe(1);
    const hooks = receiver.received.filter((w) => w.raw.includes(`"batch.completed"`) && w.raw.includes(batch.id));
    expect(hooks).toHaveLength(1);
    const event = new Webhook(endpoint.body.secret).verify(hooks[0].raw, hooks[0].headers as Record<string, string>) as { type: string; data: Record<string, unknown> };
    expect(event).toMatchObject({ type: 'batch.completed', data: { id: batch.id, status: 'completed', counts: { succeeded: 6 } } });
    const [deliveries] = await sql()<{ n: number }[]>`select count(*)::int as n from webhook_deliveries where job_id = ${batch.id}`;
    expect(deliveries.n).toBe(1);
    const inbox = await api.call('GET', '/v1/notifications?limit=100');
    const announced = inbox.body.data.filter((n: { event: string }) => n.event === 'batch.completed');
    expect(announced).toEqual([expect.objectContaining({ batch_id: batch.id, generation_id: null, title: 'Your batch is done' })]);
    expect(inbox.body.data.filter((n: { event: string }) => n.event === 'generation.succeeded')).toHaveLength(6);

    // Listed among the user's batches.
    const batches = await api.call('GET', '/v1/batches');
    expect(batches.body.data.map((b: { id: string }) => b.id)).toEqual([batch.id]);
    expect(batches.body.data[0]).toEqual(done);
  }, 120_000);

  test('a batch over the credits or the limits is refused whole: nothing created, no credits held', async () => {
    // 12 credits: two 6-credit items (12) pass the credits but three active jobs is the free limit.
    const { userId, api } = await newUser('free');
    const before = await creditBalance(stack.database.db, userId);
    const costly = await submitBatch(api, [small('a'), small('b'), { prompt: 'c', duration_seconds: 11, resolution: '480p' }], 'over-credits');
    expect(costly.status).toBe(402);
    expect(costly.body.error).toMatchObject({ code: 'insufficient_credits', details: { needed: 13, available: 12 } });
    const many = await submitBatch(api, [small('a'), small('b'), small('c'), small('d')], 'over-active');
    expect(many.status).toBe(429);
    expect(many.body.error).toMatchObject({ code: 'too_many_active_jobs', details: { limit: 3, items: 4 } });
    expect(Number(many.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
    expect(many.headers.get('ratelimit')).toContain('"active"');
    expect(await userRows(userId)).toEqual({ jobs: 0, batches: 0, reserves: 0, keys: 0 });
    expect(await creditBalance(stack.database.db, userId)).toEqual(before);

    // A key refused once is free: the batch that fits is admitted under it.
    const fits = await submitBatch(api, [small('a'), small('b'), small('c')], 'over-active');
    expect(fits.status).toBe(202);
    expect((await userRows(userId)).jobs).toBe(3);
    expect((await creditBalance(stack.database.db, userId)).reserved).toBe(3);
    await waitForBatch(api, fits.body.id, 'completed');
  }, 60_000);

  test('a batch may hold both lanes: each item counts against its own lane, runs in it, and pays its price', async () => {
    // free: 3 active interactive jobs, 4 active batch-lane jobs, 12 credits. A 4 s 480p job costs 4 credits, 2 in the
    // batch lane (BATCH_PRICE_FACTOR 0.5).
    const { userId, api } = await newUser('free');
    const lane = (prompt: string) => ({ prompt, duration_seconds: 4, resolution: '480p', priority: 'batch' });
    // Five batch-lane items pass the interactive limit (none is interactive) but not the batch lane's 4.
    const overLane = await submitBatch(api, [1, 2, 3, 4, 5].map((i) => lane(`over ${i}`)));
    expect(overLane.status).toBe(429);
    expect(overLane.body.error).toMatchObject({ code: 'too_many_active_batch_jobs', details: { limit: 4, active: 0, items: 5, priority: 'batch' } });
    expect(overLane.headers.get('ratelimit-policy')).toContain('"active";q=4');
    expect(await userRows(userId)).toEqual({ jobs: 0, batches: 0, reserves: 0, keys: 0 });

    // Three interactive items fill the interactive lane and four batch-lane ones the batch lane: 3 + 4 × 2 = 11 credits.
    const mixed = await submitBatch(api, [small('i0'), lane('b0'), small('i1'), lane('b1'), lane('b2'), small('i2'), lane('b3')], 'mixed');
    expect(mixed.status).toBe(202);
    expect(mixed.body).toMatchObject({ total: 7 });
    expect((await creditBalance(stack.database.db, userId)).reserved).toBe(11);
    const items = await api.call('GET', `/v1/generations?batch_id=${mixed.body.id}&limit=20`);
    const lanes = Object.fromEntries(items.body.data.map((g: { prompt: string; priority: string }) => [g.prompt, g.priority]));
    expect(lanes).toEqual({ i0: 'interactive', i1: 'interactive', i2: 'interactive', b0: 'batch', b1: 'batch', b2: 'batch', b3: 'batch' });

    const done = await waitForBatch(api, mixed.body.id, 'completed');
    expect(done.counts).toMatchObject({ succeeded: 7 });
    expect(await creditBalance(stack.database.db, userId)).toEqual({ available: 1, reserved: 0, used: 11 });
  }, 90_000);

  test('a bad batch is a 400 naming the bad item; nothing is created', async () => {
    const { userId, api } = await newUser('pro');
    const empty = await submitBatch(api, []);
    expect(empty.status).toBe(400);
    expect(empty.body.error.code).toBe('invalid_request');
    expect(empty.body.error.message).toMatch(/^items: /);
    const tooMany = await submitBatch(api, Array.from({ length: 501 }, (_, i) => small(`x${i}`)));
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.error.message).toMatch(/at most 500/);
    const bad = await submitBatch(api, [small('fine'), small('fine too'), { prompt: '' }, small('fine three')]);
    expect(bad.status).toBe(400);
    expect(bad.body.error).toMatchObject({ code: 'invalid_batch_item', details: { index: 2, code: 'invalid_request' } });
    expect(bad.body.error.message).toMatch(/^items\[2\]\.prompt: /);
    const unknownField = await submitBatch(api, [small('fine'), { prompt: 'x', colour: 'red' }]);
    expect(unknownField.body.error).toMatchObject({ code: 'invalid_batch_item', details: { index: 1 } });
    const privateHook = await submitBatch(api, [{ ...small('x'), webhook_url: 'http://10.1.2.3/hook' }]);
    expect(privateHook.body.error).toMatchObject({ code: 'invalid_batch_item', details: { index: 0, code: 'invalid_webhook_url' } });
    const badLane = await submitBatch(api, [small('fine'), { ...small('later'), priority: 'urgent' }]);
    expect(badLane.body.error).toMatchObject({ code: 'invalid_batch_item', details: { index: 1, code: 'invalid_request' } });
    expect(badLane.body.error.message).toMatch(/^items\[1\]\.priority: /);
    const notAnObject = await api.call('POST', '/v1/batches', { items: 'many' });
    expect(notAnObject.status).toBe(400);
    expect((await api.call('GET', '/v1/batches/batch_nothing')).status).toBe(404);
    expect(await userRows(userId)).toEqual({ jobs: 0, batches: 0, reserves: 0, keys: 0 });
  });

  test('cancel ends what has not ended; the batch reads canceled and is announced once', async () => {
    const { api } = await newUser('pro');
    const created = await submitBatch(api, [small('quick one'), small('hangs a [hang]'), small('hangs b [hang]'), small('hangs c [hang]')]);
    expect(created.status).toBe(202);
    const id = created.body.id as string;
    const running = await eventually(
      async () => {
        const res = await api.call('GET', `/v1/batches/${id}`);
        return res.body.counts.succeeded === 1 && res.body.counts.running === 3 ? res.body : undefined;
      },
      { timeoutMs: 30_000, what: 'one item done, three running' },
    );
    expect(running.status).toBe('in_progress');

    const canceled = await api.call('POST', `/v1/batches/${id}/cancel`);
    expect(canceled.status).toBe(202);
    expect(canceled.body.status).toBe('canceling');
    const done = await waitForBatch(api, id, 'canceled');
    expect(done.counts).toEqual({ queued: 0, running: 0, succeeded: 1, failed: 0, canceled: 3, expired: 0 });
    const items = (await api.list(`?batch_id=${id}`)).body.data as Array<{ status: string }>;
    expect(items.map((i) => i.status).sort()).toEqual(['canceled', 'canceled', 'canceled', 'succeeded']);
    expect(await settled(() => batchNotifications(id))).toBe(1);
    // Again: the same answer; a completed batch cannot be canceled.
    expect((await api.call('POST', `/v1/batches/${id}/cancel`)).status).toBe(200);
    const other = await submitBatch(api, [small('just one')]);
    await waitForBatch(api, other.body.id, 'completed');
    const late = await api.call('POST', `/v1/batches/${other.body.id}/cancel`);
    expect(late.status).toBe(409);
    expect(late.body.error.code).toBe('batch_already_completed');
  }, 60_000);

  test('two items ending at the same moment complete their batch once (the counter row, in each ending transaction)', async () => {
    const { api } = await newUser('pro');
    const created = await submitBatch(api, [small('a [hang]'), small('b [hang]')]);
    const id = created.body.id as string;
    await eventually(async () => ((await api.call('GET', `/v1/batches/${id}`)).body.counts.running === 2 ? true : undefined), { what: 'both running' });
    const [a, b] = (await sql()<{ id: string }[]>`select id from generations where batch_id = ${id} order by id`).map((r) => r.id);
    // Two transactions end one item each and commit together: the second waits for the batch row, then completes it.
    const first = await sql().reserve();
    const second = await sql().reserve();
    try {
      await first`begin`;
      await second`begin`;
      await first`update generations set status = 'failed', status_rank = 2, completed_at = now() where id = ${a}`;
      const secondWrite = second`update generations set status = 'failed', status_rank = 2, completed_at = now() where id = ${b}`.execute();
      await first`commit`;
      await secondWrite;
      await second`commit`;
    } finally {
      first.release();
      second.release();
    }
    const [row] = await sql()<{ completed: boolean; failed: number; running: number }[]>`
      select completed_at is not null as completed, failed, running from batches where id = ${id}`;
    expect(row).toEqual({ completed: true, failed: 2, running: 0 });
    // Both items' workflows still hold their backend jobs: cancel them (their writes no longer move the rows).
    for (const item of [a, b]) await stack.client.workflow.getHandle(item).signal(cancelGenerationSignal, { reason: 'test' });
    expect(await settled(() => batchNotifications(id))).toBe(1);
  });

  test('a 500-item batch is admitted in one transaction, fast; canceled whole; pruned with its items by retention', async () => {
    const { userId, api } = await newUser('enterprise');
    {
      // Items that hang on the backend: 8 run (the GPU slots), the rest wait, until the batch is canceled.
      const items = Array.from({ length: 500 }, (_, i) => ({ prompt: `item ${i} of a large batch [hang]`, duration_seconds: 1, resolution: '480p', metadata: { i: String(i) } }));
      const began = performance.now();
      const created = await submitBatch(api, items, `large-${userId}`);
      const tookMs = performance.now() - began;
      expect(created.status).toBe(202);
      // Read after the starts: the first items may be running already.
      expect(created.body.counts.queued + created.body.counts.running).toBe(500);
      // The answer comes once the batch is admitted and its first item started; the others start right after it.
      const ids = (await sql()<{ id: string }[]>`select id from generations where batch_id = ${created.body.id}`).map((r) => r.id);
      expect(ids).toHaveLength(500);
      // Every item's workflow started (Temporal's own count of the user's runs; the user is this test's alone).
      await eventually(
        async () => ((await stack.client.workflow.count(`VgUserId = '${userId}'`)).count === 500 ? true : undefined),
        { timeoutMs: 120_000, intervalMs: 200, what: "every item's workflow to start" },
      );
      console.log(`500-item batch answered in ${Math.round(tookMs)} ms; every item's workflow started after ${Math.round(performance.now() - began)} ms`);
      const replayBegan = performance.now();
      const replay = await submitBatch(api, items, `large-${userId}`);
      console.log(`its replay answered in ${Math.round(performance.now() - replayBegan)} ms`);
      expect(replay.body.id).toBe(created.body.id);
      expect((await creditBalance(stack.database.db, userId)).reserved).toBe(500);

      const cancelBegan = performance.now();
      const cancel = await api.call('POST', `/v1/batches/${created.body.id}/cancel`);
      console.log(`its cancel answered in ${Math.round(performance.now() - cancelBegan)} ms`);
      expect(cancel.status).toBe(202);
      const done = await waitForBatch(api, created.body.id, 'canceled');
      expect(done.counts.canceled).toBe(500);
      expect(await settled(() => batchNotifications(created.body.id))).toBe(1);
      await eventually(async () => ((await creditBalance(stack.database.db, userId)).reserved === 0 ? true : undefined), { what: 'every reservation released' });
    }

    // Retention: past the jobs' window the items go, then the batch with its key and notification; a fresh one stays.
    const [{ id: batchId }] = await sql()<{ id: string }[]>`select id from batches where user_id = ${userId}`;
    await sql()`update generations set completed_at = now() - interval '31 days' where batch_id = ${batchId}`;
    await sql()`update batches set completed_at = now() - interval '31 days' where id = ${batchId}`;
    const windows = retentionWindows(stack.config);
    const step = (table: string) => PRUNE_STEPS.find((s) => s.table === table)!;
    // The batch waits for its items.
    expect((await step('batches').batch(sql(), windows, 1000, undefined)).deleted.batches).toBe(0);
    for (let more = true; more; ) more = !(await step('generations').batch(sql(), windows, 1000, undefined)).done;
    const pruned = await step('batches').batch(sql(), windows, 1000, undefined);
    expect(pruned.deleted).toMatchObject({ batches: 1, idempotency_keys: 1, notifications: 1 });
    expect(await userRows(userId)).toMatchObject({ jobs: 0, batches: 0, keys: 0 });
  }, 240_000);
});

describe('a batch whose API died after the admission', () => {
  let stack: Stack;
  beforeAll(async () => {
    // The reconciler sweeps the whole database: one of its own.
    stack = await startStack({ ownDatabase: true });
  });
  afterAll(async () => {
    await stack?.close();
  });

  test('is started whole by the reconciler from its rows, and completes', async () => {
    const { userId, apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const [user] = await stack.database.sql<{ id: string; name: string; tier: string; created_at: Date }[]>`select * from users where id = ${userId}`;
    const items = Array.from({ length: 5 }, (_, i) => ({ prompt: `orphaned item ${i}`, duration_seconds: 1, resolution: '480p' as const, aspect_ratio: '16:9' as const, seed: null, webhook_url: null, metadata: {} }));
    // What POST /v1/batches commits before it starts anything; the process "dies" there.
    const batch = describeBatch(stack.config, { id: user.id, name: user.name, tier: user.tier, createdAt: user.created_at }, items, 'orphaned');
    const queue = createQueuePositions({ sql: stack.database.sql, config: stack.config });
    expect((await admitBatch({ sql: stack.database.sql, config: stack.config, queue }, batch)).outcome).toBe('admitted');
    expect((await api.call('GET', `/v1/batches/${batch.batchId}`)).body.counts.queued).toBe(5);

    const reconciler = createReconcileActivities({ db: stack.database.db, client: stack.client, config: stack.config, logger: createLogger('test', 'silent'), endGeneration: async () => false });
    const report = await reconciler.reconcileProjection({ quietForMs: 0, limit: 500 });
    expect(report.startedSubmissions).toBe(5);
    const done = await eventually(
      async () => {
        const res = await api.call('GET', `/v1/batches/${batch.batchId}`);
        return res.body.status === 'completed' ? res.body : undefined;
      },
      { timeoutMs: 60_000, what: 'the batch to complete' },
    );
    expect(done.counts.succeeded).toBe(5);
  }, 90_000);
});
