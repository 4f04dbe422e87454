import { randomBytes } from 'node:crypto';
import { pageStatement } from '../src/db/projection';
import { generations } from '../src/db/schema';
import { STATUS_RANK, type GenerationStatus } from '../src/domain/generation-state';
import { apiClient, startStack, type Stack } from './harness';

/** Inserts projection rows directly (as the workflow's first step would), so listing is tested at volume in seconds. */
async function seedRows(stack: Stack, userId: string, count: number, startMs: number, status = 'succeeded') {
  const rows = Array.from({ length: count }, (_, i) => ({
    id: `gen_seed_${randomBytes(8).toString('hex')}`,
    userId,
    tier: 'pro',
    status: status as GenerationStatus,
    statusRank: STATUS_RANK[status as GenerationStatus],
    prompt: `seeded ${i}`,
    params: { duration_seconds: 5, resolution: '720p', aspect_ratio: '16:9', seed: null, webhook_url: null, metadata: {} },
    // Several rows share a timestamp, so the keyset must break ties by id.
    createdAt: new Date(startMs + Math.floor(i / 3) * 1000),
  }));
  await stack.database.db.insert(generations).values(rows);
  return rows;
}

describe('listing my generations', () => {
  let stack: Stack;
  beforeAll(async () => {
    stack = await startStack();
  });
  afterAll(async () => {
    await stack?.close();
  });

  test('newest first, filtered, paged by an opaque cursor that stays stable under concurrent inserts', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const base = Date.parse('2026-01-01T00:00:00Z');
    const seeded = await seedRows(stack, userId, 45, base);
    await seedRows(stack, userId, 5, base + 100_000, 'failed');

    const seen: string[] = [];
    let cursor: string | null = null;
    let pages = 0;
    do {
      const page: { status: number; body: any } = await api.list(`?status=succeeded&limit=10${cursor ? `&cursor=${cursor}` : ''}`);
      expect(page.status).toBe(200);
      seen.push(...page.body.data.map((g: { id: string }) => g.id));
      cursor = page.body.next_cursor;
      expect(page.body.has_more).toBe(cursor !== null);
      // New jobs arriving mid-scan (newer than everything) must not shift the pages.
      if (pages++ === 1) await seedRows(stack, userId, 7, base + 500_000);
    } while (cursor);

    const expected = [...seeded]
      .sort((a, b) => b.createdAt.getTime() - a.createdAt.getTime() || (a.id < b.id ? 1 : -1))
      .map((r) => r.id);
    expect(seen).toEqual(expected);

    const window = await api.list(`?created_after=${new Date(base + 4_500).toISOString()}&created_before=${new Date(base + 8_500).toISOString()}&limit=100`);
    expect(window.body.data).toHaveLength(12); // seconds 5..8, three rows each
  });

  test('rows within one millisecond are each listed once, page by page (the cursor keeps microseconds)', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const { sql } = stack.database;
    // Written by now() in a burst, rows share a millisecond and differ in microseconds (as notifications do).
    const times = [1, 2, 3, 4, 5].map((us) => `2026-03-01 00:00:00.12300${us}+00`);
    for (const [i, at] of times.entries()) {
      await sql`
        insert into generations (id, user_id, tier, status, status_rank, prompt, params, created_at, updated_at)
        values (${`gen_us_${i}`}, ${userId}, 'pro', 'succeeded', 2, 'same millisecond', '{}'::jsonb, ${at}::timestamptz, ${at}::timestamptz)`;
      await sql`
        insert into notifications (id, user_id, job_id, event, title, message, data, created_at)
        values (${`ntf_us_${userId}_${i}`}, ${userId}, ${`gen_us_${userId}_${i}`}, 'generation.succeeded', 't', 'm', '{}'::jsonb, ${at}::timestamptz)`;
    }
    const walk = async (path: string) => {
      const seen: string[] = [];
      let cursor: string | null = null;
      do {
        const page: { status: number; body: any } = await api.call('GET', `${path}?limit=1${cursor ? `&cursor=${cursor}` : ''}`);
        expect(page.status).toBe(200);
        seen.push(...page.body.data.map((row: { id: string }) => row.id));
        cursor = page.body.next_cursor;
      } while (cursor && seen.length < 20);
      return seen;
    };
    expect(await walk('/v1/generations')).toEqual([4, 3, 2, 1, 0].map((i) => `gen_us_${i}`));
    expect(await walk('/v1/notifications')).toEqual([4, 3, 2, 1, 0].map((i) => `ntf_us_${userId}_${i}`));
  });

  test('bad parameters are 400s that name the field', async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    expect((await api.list('?limit=101')).body.error).toMatchObject({ code: 'invalid_request', message: expect.stringContaining('limit') });
    expect((await api.list('?status=done')).body.error.message).toContain('status');
    expect((await api.list('?cursor=not-a-cursor')).body.error.code).toBe('invalid_cursor');
    expect((await api.list('?created_after=yesterday')).status).toBe(400);
  });

  test('another user\'s job is 404 everywhere', async () => {
    const owner = await stack.createUser('pro');
    const stranger = await stack.createUser('pro');
    const job = (await apiClient(stack.apiUrl, owner.apiKey).submit({ prompt: 'mine' })).body;
    const other = apiClient(stack.apiUrl, stranger.apiKey);
    expect((await other.get(job.id)).status).toBe(404);
    expect((await other.call('POST', `/v1/generations/${job.id}/cancel`)).status).toBe(404);
    expect((await other.list()).body.data).toEqual([]);
    await apiClient(stack.apiUrl, owner.apiKey).waitForTerminal(job.id);
  });

  test('the page query is served by the (user, created_at, id) index', async () => {
    const { userId } = await stack.createUser('pro');
    await seedRows(stack, userId, 30, Date.parse('2026-02-01T00:00:00Z'));
    const { sql } = stack.database;
    await sql`analyze generations`;
    // The exact query the API runs, for the second page of a filtered listing.
    const query = pageStatement(userId, { status: 'succeeded', limit: 20, after: { createdAt: '2026-02-01T00:00:05Z', id: 'gen_z' } });
    const plan = await sql.begin(async (tx) => {
      // The table is small here, so ask whether an index scan can serve the page in order, as it must at volume.
      await tx`set local enable_seqscan = off`;
      await tx`set local enable_bitmapscan = off`;
      return tx.unsafe(`explain ${query.text}`, query.params);
    });
    const text = plan.map((row: Record<string, string>) => row['QUERY PLAN']).join('\n');
    expect(text).toContain('generations_user_created_idx');
    expect(text).not.toMatch(/\bSort\b/);
  });
});
