import { startApi } from '../src/api/main';
import { createLogger } from '../src/lib/logger';
import { openEventStream, type EventStreamClient, type ServerSentEvent } from './notification-helpers';
import { apiClient, eventually, startStack, testEnv, type Stack } from './harness';

const TERMINAL_EVENTS = ['generation.succeeded', 'generation.failed', 'generation.canceled'];

describe('live generation events over SSE, fed by the change feed in Postgres', () => {
  let stack: Stack;
  const streams: EventStreamClient[] = [];
  const open = async (...args: Parameters<typeof openEventStream>) => {
    const stream = await openEventStream(...args);
    streams.push(stream);
    return stream;
  };
  const ofJob = (jobId: string) => (e: ServerSentEvent) => e.data.generation_id === jobId;
  const feedEvents = (stream: EventStreamClient) => stream.events.filter((e) => e.id !== undefined);
  const endsJob = (jobId: string) => (events: ServerSentEvent[]) => events.some((e) => ofJob(jobId)(e) && TERMINAL_EVENTS.includes(e.event));

  /** The feed as stored, for one user: what every stream must agree with. */
  async function storedEvents(userId: string) {
    const rows = await stack.database.sql<{ id: string; type: string; job_id: string }[]>`
      select id, type, job_id from generation_events where user_id = ${userId} order by id`;
    return rows.map((r) => ({ id: r.id, event: r.type, jobId: r.job_id }));
  }

  beforeAll(async () => {
    stack = await startStack({ env: { SSE_KEEPALIVE_MS: '200' } });
  });
  afterAll(async () => {
    for (const s of streams) s.close();
    await stack?.close();
  });

  test('a client that disconnects and reconnects with Last-Event-ID receives the events it missed, in order', async () => {
    const { apiKey, userId } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const first = await open(`${stack.apiUrl}/v1/events`, apiKey);
    expect(first.status).toBe(200);
    expect(first.headers.get('content-type')).toMatch(/^text\/event-stream/);

    const job = await api.submit({ prompt: 'a hummingbird in slow motion' });
    await first.waitFor((events) => events.some((e) => e.event === 'generation.queued' && ofJob(job.body.id)(e)));
    first.close();
    // As EventSource does, resume from the last event that carried an id (queue positions carry none).
    const seenBeforeDrop = feedEvents(first);
    const lastEventId = seenBeforeDrop[seenBeforeDrop.length - 1].id!;

    await api.waitForTerminal(job.body.id);
    const second = await open(`${stack.apiUrl}/v1/events`, apiKey, { lastEventId });
    await second.waitFor(endsJob(job.body.id));

    const stored = await storedEvents(userId);
    const missed = stored.filter((e) => BigInt(e.id) > BigInt(lastEventId));
    expect(missed.length).toBeGreaterThan(0);
    const caughtUp = feedEvents(second);
    expect(caughtUp.map((e) => ({ id: e.id, event: e.event, jobId: e.data.generation_id }))).toEqual(missed);
    // Together the two connections saw every event exactly once, in order.
    expect([...seenBeforeDrop, ...caughtUp].map((e) => e.id)).toEqual(stored.map((e) => e.id));
    expect(caughtUp.map((e) => e.event)).toContain('generation.succeeded');
    expect(caughtUp[caughtUp.length - 1].data).toMatchObject({ status: 'succeeded', progress: 1, video_url: expect.any(String) });
  });

  test("a job's own stream replays its history from the first event, then follows it live", async () => {
    const { apiKey } = await stack.createUser('pro');
    const api = apiClient(stack.apiUrl, apiKey);
    const other = await api.submit({ prompt: 'another job of the same user' });
    const job = await api.submit({ prompt: 'a tide pool at dawn' });
    const stream = await open(`${stack.apiUrl}/v1/generations/${job.body.id}/events`, apiKey);
    expect(stream.status).toBe(200);
    // Feed events only (queue positions, which carry no id, are covered in sse-queue.test.ts).
    const events = (await stream.waitFor(endsJob(job.body.id))).filter((e) => e.id !== undefined);

    expect(events.every(ofJob(job.body.id))).toBe(true);
    expect(events.some(ofJob(other.body.id))).toBe(false);
    expect(events[0]).toMatchObject({ event: 'generation.queued', data: { status: 'queued', progress: 0 } });
    expect(events.map((e) => e.event)).toEqual(expect.arrayContaining(['generation.queued', 'generation.running', 'generation.succeeded']));
    const ids = events.map((e) => Number(e.id));
    expect(ids).toEqual([...ids].sort((a, b) => a - b));
    expect(new Set(ids).size).toBe(ids.length);
    await api.waitForTerminal(other.body.id);
  });

  test('a change written by any process reaches the clients of every API instance', async () => {
    const { databaseUrl } = testEnv();
    const secondApi = await startApi({
      config: { ...stack.config, api: { ...stack.config.api, port: 0 } },
      databaseUrl,
      logger: createLogger('second-api', 'warn'),
      adminApiKey: stack.adminApiKey,
    });
    try {
      const { apiKey } = await stack.createUser('free');
      const onSecond = await open(`${secondApi.url}/v1/events`, apiKey);
      expect(onSecond.status).toBe(200);
      // Submitted through the first API, run by the worker: both write the projection, neither is the second API.
      const job = await apiClient(stack.apiUrl, apiKey).submit({ prompt: 'a snow globe being shaken' });
      const events = await onSecond.waitFor(endsJob(job.body.id));
      expect(events.filter(ofJob(job.body.id)).map((e) => e.event)).toEqual(expect.arrayContaining(['generation.queued', 'generation.running', 'generation.succeeded']));
      onSecond.close();
    } finally {
      await secondApi.close({ graceMs: 0 });
    }
  });

  test("the change feed records only visible changes, and commits one user's events in id order", async () => {
    const { userId } = await stack.createUser('pro');
    const { sql } = stack.database;
    const [first, second] = [`gen_feed_a_${userId}`, `gen_feed_b_${userId}`];
    for (const id of [first, second]) {
      await sql`insert into generations (id, user_id, tier, status, status_rank, prompt, params, created_at)
        values (${id}, ${userId}, 'pro', 'queued', 0, 'feed test', '{}'::jsonb, now())`;
    }
    const feed = async () => (await sql<{ id: string; job_id: string; type: string }[]>`
      select id, job_id, type from generation_events where user_id = ${userId} order by id`).map((e) => ({ ...e, id: Number(e.id) }));
    expect((await feed()).map((e) => e.type)).toEqual(['generation.queued', 'generation.queued']);

    await sql`update generations set updated_at = now() + interval '1 second' where id = ${first}`;
    expect(await feed()).toHaveLength(2);

    // A writer holding an open transaction on one job makes the user's next writer wait, so ids commit in order.
    const holder = await sql.reserve();
    try {
      await holder`begin`;
      await holder`update generations set progress = 0.5, status = 'running', status_rank = 1 where id = ${first}`;
      const blocked = sql`update generations set progress = 0.25, status = 'running', status_rank = 1 where id = ${second}`.then(() => 'done');
      await eventually(async () => ((await sql`select 1 from pg_locks where locktype = 'advisory' and not granted`).length > 0 ? true : undefined), {
        what: 'the second writer to wait for the first',
      });
      await holder`commit`;
      await blocked;
    } finally {
      holder.release();
    }
    const events = await feed();
    expect(events.slice(2).map((e) => [e.job_id, e.type])).toEqual([
      [first, 'generation.running'],
      [second, 'generation.running'],
    ]);
    await sql`update generations set progress = 0.75 where id = ${first}`;
    expect((await feed()).slice(-1)[0]).toMatchObject({ job_id: first, type: 'generation.updated' });
  });

  test('streams keep alive, need an API key, and show only your own jobs', async () => {
    const owner = await stack.createUser('pro');
    const stranger = await stack.createUser('pro');
    const job = await apiClient(stack.apiUrl, owner.apiKey).submit({ prompt: 'private fireworks' });

    const stream = await open(`${stack.apiUrl}/v1/events`, owner.apiKey);
    await stream.waitFor((_events, comments) => comments >= 2);

    const anonymous = await fetch(`${stack.apiUrl}/v1/events`);
    expect(anonymous.status).toBe(401);
    expect(((await anonymous.json()) as { error: { code: string } }).error.code).toBe('unauthorized');
    const foreign = await open(`${stack.apiUrl}/v1/generations/${job.body.id}/events`, stranger.apiKey);
    expect(foreign.status).toBe(404);
    const badResume = await open(`${stack.apiUrl}/v1/events`, owner.apiKey, { lastEventId: 'yesterday' });
    expect(badResume.status).toBe(400);
    await apiClient(stack.apiUrl, owner.apiKey).waitForTerminal(job.body.id);
  });
});
