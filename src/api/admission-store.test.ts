import { randomBytes } from 'node:crypto';
import { rateLimitHeaders, secondsUntilUtcMidnight } from './admission-headers';
import { creditBalance } from '../credits/ledger';
import { createUser } from './auth';
import { BACKEND_JOB_CHANNEL } from '../dispatch/backend-wakeups';
import { GPU_SLOTS_CHANNEL } from '../dispatch/capacity';
import { eventually } from '../../test/eventually';
import { useRunDatabase } from '../../test/run-database';
import { getGeneration, queuedRow, rowParams } from '../db/projection';
import type { GenerationInput } from '../domain/generation';
import { admitSubmission, claimRecord, countUserJobs, peekRequestTokens, undoSubmission, type SubmissionClaim } from './admission-store';

/** The token bucket and the per-user admission lock against the run's real Postgres. */
describe('admission state in Postgres', () => {
  const database = useRunDatabase({ max: 12 });
  const bucket = () => `test:${randomBytes(6).toString('hex')}`;
  /** The i-th submit of a user (job gen_<user>_<i>): 10 credits, at most 3 active jobs. */
  const claim = (userId: string, i: number, overrides: Partial<SubmissionClaim>): SubmissionClaim => ({
    userId,
    bucketKey: `test:${userId}`,
    rate: { burst: 100, perSecond: 100 },
    maxActive: 3,
    dailyQuota: 100,
    backlogFull: false,
    idempotencyKey: undefined,
    requestHash: 'h',
    jobId: `gen_${userId}_${i}`,
    credits: 10,
    acceptedAt: new Date(),
    pool: 'gpu-test',
    tier: 'pro',
    fairnessWeight: 1,
    prompt: 'a test',
    params: {},
    ...overrides,
  });

  test("a user's bucket gives its burst, then refuses until it refills at its rate", async () => {
    const { user } = await createUser(database.db, { name: 'bursty', tier: 'pro', credits: 1_000 });
    const rate = { burst: 3, perSecond: 5 };
    const admit = (i: number) => admitSubmission(database.sql, claim(user.id, i, { rate, maxActive: 100 }));
    const taken = [];
    for (let i = 0; i < 4; i++) taken.push(await admit(i));
    expect(taken.map((t) => t.outcome)).toEqual(['admitted', 'admitted', 'admitted', 'rate_limited']);
    expect((taken[3] as { tokens: number }).tokens).toBeLessThan(1);

    // The level at two instants of the database's own clock (a transaction's now() is the one the peek used): it rose by
    // the rate times the time between them, up to the burst.
    const levelAt = async () => {
      const connection = await database.sql.reserve();
      try {
        await connection`begin`;
        const level = await peekRequestTokens(connection, `test:${user.id}`, rate);
        const [{ at }] = await connection<{ at: number }[]>`select extract(epoch from now())::float8 as at`;
        await connection`commit`;
        return { level, at };
      } finally {
        connection.release();
      }
    };
    const first = await levelAt();
    const second = await eventually(async () => {
      const next = await levelAt();
      return next.at > first.at ? next : undefined;
    });
    expect(second.level).toBeCloseTo(Math.min(rate.burst, first.level + (second.at - first.at) * rate.perSecond), 5);

    await eventually(async () => ((await peekRequestTokens(database.sql, `test:${user.id}`, rate)) >= 1 ? true : undefined), { what: 'a token' });
    expect((await admit(4)).outcome).toBe('admitted');
  });

  test('concurrent submits from many connections take exactly the burst, never more', async () => {
    const { user } = await createUser(database.db, { name: 'flood', tier: 'pro', credits: 1_000 });
    const rate = { burst: 5, perSecond: 0.001 };
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => admitSubmission(database.sql, claim(user.id, i, { rate, maxActive: 100 }))));
    expect(results.filter((r) => r.outcome === 'admitted')).toHaveLength(5);
    expect(results.filter((r) => r.outcome === 'rate_limited')).toHaveLength(7);
  });

  test('a bucket never used is full, and peeking takes nothing', async () => {
    const key = bucket();
    expect(await peekRequestTokens(database.sql, key, { burst: 7, perSecond: 1 })).toBe(7);
    expect(await peekRequestTokens(database.sql, key, { burst: 7, perSecond: 1 })).toBe(7);
  });

  test('a submit whose key was taken is a replay: it takes no token and is not counted', async () => {
    const { user } = await createUser(database.db, { name: 'replayer', tier: 'pro', credits: 100 });
    const rate = { burst: 1, perSecond: 0.001 };
    expect(await admitSubmission(database.sql, claim(user.id, 1, { idempotencyKey: 'k1', rate }))).toMatchObject({ outcome: 'admitted', tokens: 0 });
    // The bucket is empty now: a new submit is refused, the same one again is a replay.
    expect(await admitSubmission(database.sql, claim(user.id, 2, { idempotencyKey: 'k2', rate }))).toMatchObject({ outcome: 'rate_limited' });
    expect(await admitSubmission(database.sql, claim(user.id, 1, { idempotencyKey: 'k1', rate }))).toMatchObject({ outcome: 'replay', earlierHash: 'h' });
    expect(await countUserJobs(database.sql, user.id)).toEqual({ active: 1, today: 1 });
  });

  test('concurrent submits of one user are admitted no further than the limit leaves; ended jobs stop counting', async () => {
    const { user } = await createUser(database.db, { name: 'admitted', tier: 'pro', credits: 1_000 });
    const admit = (i: number, key = `key-${i}`) => admitSubmission(database.sql, claim(user.id, i, { idempotencyKey: key }));
    const outcomes = await Promise.all(Array.from({ length: 8 }, (_, i) => admit(i)));
    const admitted = outcomes.flatMap((o, i) => (o.outcome === 'admitted' ? [i] : []));
    expect(admitted).toHaveLength(3);
    expect(outcomes.filter((o) => o.outcome === 'too_many_active_jobs')).toHaveLength(5);
    expect(await countUserJobs(database.sql, user.id)).toEqual({ active: 3, today: 3 });
    expect(await creditBalance(database.db, user.id)).toMatchObject({ available: 970, reserved: 30 });
    // Each admitted job has its queued row and queue entry; each later one sees the earlier ones ahead of it.
    const rows = await database.sql<{ id: string; status: string }[]>`
      select g.id, g.status from generations g join gpu_queue_entries e on e.job_id = g.id where g.user_id = ${user.id}`;
    expect(rows.map((r) => r.id).sort()).toEqual(admitted.map((i) => `gen_${user.id}_${i}`).sort());
    expect(outcomes.flatMap((o) => (o.outcome === 'admitted' ? [o.queue.queuedBefore] : [])).sort()).toEqual([0, 1, 2]);
    // The same key again is a replay, whatever the limits say.
    expect(await admit(50, `key-${admitted[0]}`)).toMatchObject({ outcome: 'replay', earlierHash: 'h' });

    await database.sql`update generations set status = 'succeeded', status_rank = 2 where id in ${database.sql(admitted.slice(0, 2).map((i) => `gen_${user.id}_${i}`))}`;
    expect((await admit(100)).outcome).toBe('admitted');
    expect((await admit(101)).outcome).toBe('admitted');
    expect((await admit(102)).outcome).toBe('too_many_active_jobs');
    expect(await countUserJobs(database.sql, user.id)).toEqual({ active: 3, today: 5 });
  });

  test("the claim the API sends has exactly the fields of vg_admission_claim; one that lacks a field is refused", async () => {
    const [{ fields }] = await database.sql<{ fields: string }[]>`
      select string_agg(a.attname, ',' order by a.attnum) as fields from pg_type t join pg_attribute a on a.attrelid = t.typrelid
      where t.typname = 'vg_admission_claim' and a.attnum > 0 and not a.attisdropped`;
    const record = claimRecord(claim('nobody', 0, {}));
    expect(Object.keys(record).sort()).toEqual(fields.split(',').sort());
    const { credits: _credits, ...lacking } = record;
    await expect(database.sql`select * from vg_admit_submission(${JSON.stringify(lacking)}::jsonb)`).rejects.toThrow(/the claim lacks a field/);
  });

  test('the queued row admission writes is the row the submit answers with without reading it (queuedRow)', async () => {
    const { user } = await createUser(database.db, { name: 'answered', tier: 'pro', credits: 100 });
    const input: GenerationInput = {
      jobId: `gen_${user.id}_answered`,
      userId: user.id,
      tier: 'pro',
      acceptedAt: new Date().toISOString(),
      request: { prompt: 'a row', duration_seconds: 4, resolution: '1080p', aspect_ratio: '9:16', seed: 7, webhook_url: 'https://hooks.test/x', metadata: { a: 'b' } },
      settings: { gpuTaskQueue: 'gpu-test', fairnessWeight: 1, heartbeatTimeoutMs: 1000, maxAttempts: 3, retryBackoffMs: 10, maxQueueMs: 60_000, maxRunMs: 60_000, expectedRunMs: 1000 },
    };
    const outcome = await admitSubmission(
      database.sql,
      claim(user.id, 0, { jobId: input.jobId, acceptedAt: new Date(input.acceptedAt), prompt: input.request.prompt, params: rowParams(input.request) }),
    );
    expect(outcome.outcome).toBe('admitted');
    expect(await getGeneration(database.db, user.id, input.jobId)).toEqual(queuedRow(input));
  });

  test('undoing a submit whose workflow never started takes back everything admission wrote', async () => {
    const { user } = await createUser(database.db, { name: 'undone', tier: 'pro', credits: 100 });
    const outcome = await admitSubmission(database.sql, claim(user.id, 0, { idempotencyKey: 'undo-1' }));
    expect(outcome.outcome).toBe('admitted');
    expect(await undoSubmission(database.db, `gen_${user.id}_0`)).toBe(true);
    expect(await database.sql`select 1 from generations where user_id = ${user.id}`).toHaveLength(0);
    expect(await database.sql`select 1 from gpu_queue_entries where user_id = ${user.id}`).toHaveLength(0);
    expect(await database.sql`select 1 from idempotency_keys where user_id = ${user.id}`).toHaveLength(0);
    expect(await creditBalance(database.db, user.id)).toMatchObject({ available: 100, reserved: 0 });
    // A row a workflow run has opened is never undone.
    await admitSubmission(database.sql, claim(user.id, 1, { idempotencyKey: 'undo-2' }));
    await database.sql`update generations set run_opened_at = now() where id = ${`gen_${user.id}_1`}`;
    expect(await undoSubmission(database.db, `gen_${user.id}_1`)).toBe(false);
    expect(await countUserJobs(database.sql, user.id)).toEqual({ active: 1, today: 1 });
  });

  test('a submit the credits cannot pay for writes nothing', async () => {
    const { user } = await createUser(database.db, { name: 'poor', tier: 'pro', credits: 5 });
    const outcome = await admitSubmission(database.sql, claim(user.id, 0, { idempotencyKey: 'poor-1' }));
    expect(outcome).toMatchObject({ outcome: 'insufficient_credits', available: 5 });
    expect(await database.sql`select 1 from idempotency_keys where user_id = ${user.id}`).toHaveLength(0);
    expect(await countUserJobs(database.sql, user.id)).toEqual({ active: 0, today: 0 });
    expect(await creditBalance(database.db, user.id)).toMatchObject({ available: 5, reserved: 0 });
  });

  test('admitting a submit and changing its row notify no one (a NOTIFY would serialize every such commit)', async () => {
    const { user } = await createUser(database.db, { name: 'quiet', tier: 'pro', credits: 100 });
    const heard: string[] = [];
    // Every channel this service notifies on, and the change feed's old one; none may hear a projection write.
    const channels = ['generation_events', GPU_SLOTS_CHANNEL, BACKEND_JOB_CHANNEL];
    const listeners = await Promise.all(channels.map((channel) => database.sql.listen(channel, (payload) => heard.push(`${channel}: ${payload}`))));
    try {
      expect((await admitSubmission(database.sql, claim(user.id, 0, { idempotencyKey: 'quiet-1' }))).outcome).toBe('admitted');
      await database.sql`update generations set status = 'running', status_rank = 1, progress = 0.5 where id = ${`gen_${user.id}_0`}`;
      // A NOTIFY from another session sent after these commits arrives after theirs would: when it is heard, theirs would
      // have been.
      const marker = `marker-${user.id}`;
      await database.sql`select pg_notify('generation_events', ${marker})`;
      for (const deadline = Date.now() + 10_000; !heard.some((h) => h.endsWith(marker)); ) {
        if (Date.now() > deadline) throw new Error('the marker notification never arrived');
        await new Promise((r) => setTimeout(r, 20));
      }
      expect(heard.filter((h) => !h.endsWith(marker))).toEqual([]);
      expect(await database.sql`select type from generation_events where user_id = ${user.id} order by id`).toEqual([
        { type: 'generation.queued' },
        { type: 'generation.running' },
      ]);
    } finally {
      await Promise.all(listeners.map((l) => l.unlisten()));
    }
  });

  test("the user's counts kept by triggers match the rows through inserts, status changes, deletes and past days", async () => {
    const { user } = await createUser(database.db, { name: 'counted', tier: 'pro', credits: 0 });
    const counted = async () => {
      const [row] = await database.sql<{ active: number; queued: number; today: number }[]>`
        select count(*) filter (where status_rank < 2)::int as active, count(*) filter (where status_rank = 0)::int as queued,
               count(*) filter (where created_at >= date_trunc('day', now(), 'UTC'))::int as today
        from generations where user_id = ${user.id}`;
      const [kept] = await database.sql<{ active: number; queued: number; today: number }[]>`
        select active, queued, case when day = (now() at time zone 'UTC')::date then today else 0 end as today
        from user_job_counts where user_id = ${user.id}`;
      return { counted: row, kept: kept ?? { active: 0, queued: 0, today: 0 } };
    };
    const insert = (id: string, status: string, rank: number, createdAt: string) => database.sql`
      insert into generations (id, user_id, tier, status, status_rank, prompt, params, created_at)
      values (${id}, ${user.id}, 'pro', ${status}, ${rank}, 'p', '{}'::jsonb, ${createdAt}::timestamptz)`;
    const setStatus = (id: string, status: string, rank: number) =>
      database.sql`update generations set status = ${status}, status_rank = ${rank} where id = ${id}`;
    const id = (n: number) => `gen_${user.id}_c${n}`;
    const now = new Date().toISOString();
    const yesterday = new Date(Date.now() - 86_400_000).toISOString();

    // Today: five queued, one of them from yesterday; then some run, finish, and one is deleted (an undone submit).
    for (let n = 0; n < 4; n++) await insert(id(n), 'queued', 0, now);
    await insert(id(4), 'queued', 0, yesterday);
    await insert(id(5), 'succeeded', 2, yesterday);
    let state = await counted();
    expect(state.kept).toEqual(state.counted);
    expect(state.kept).toEqual({ active: 5, queued: 5, today: 4 });

    await setStatus(id(0), 'running', 1);
    await setStatus(id(1), 'running', 1);
    await setStatus(id(1), 'failed', 2);
    await setStatus(id(4), 'canceled', 2);
    await database.sql`update generations set progress = 0.5 where id = ${id(0)}`; // no status change: counts unchanged
    await database.sql`delete from generations where id = ${id(3)}`;
    await database.sql`delete from generations where id = ${id(5)}`;
    state = await counted();
    expect(state.kept).toEqual(state.counted);
    expect(state.kept).toEqual({ active: 2, queued: 1, today: 3 });

    // One statement changing several rows, as an operator's SQL might.
    await database.sql`update generations set status = 'canceled', status_rank = 2 where user_id = ${user.id} and status_rank < 2`;
    state = await counted();
    expect(state.kept).toEqual(state.counted);
    expect(state.kept).toEqual({ active: 0, queued: 0, today: 3 });
  });

  test('RateLimit-Policy and RateLimit are Structured Field lists, one item per policy', () => {
    const headers = rateLimitHeaders([
      { policy: 'burst', quota: 10, windowSeconds: 5, remaining: 3.7, resetSeconds: 3.2 },
      { policy: 'active', quota: 5, unit: 'concurrent-requests', remaining: -1 },
    ]);
    expect(headers).toEqual({
      'RateLimit-Policy': '"burst";q=10;w=5, "active";q=5;qu="concurrent-requests"',
      RateLimit: '"burst";r=3;t=4, "active";r=0',
    });
    expect(secondsUntilUtcMidnight(new Date('2026-03-01T23:59:30Z'))).toBe(30);
  });
});
