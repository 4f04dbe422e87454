import http from 'node:http';
import { openEventStream, type EventStreamClient } from './notification-helpers';
import { apiClient, eventually, startStack, type Stack } from './harness';
import { metric, rawSocket, startApiWith, type ApiProcess } from './hostile-helpers';

/**
 * Event streams bounded against hostile clients: caps per user and per process, a resume window, queue positions read
 * once per user, backpressure, and streams that end when their key is revoked. Each test runs its own API instance (with
 * the limits it tests) on one stack whose GPU pool has no capacity, so submitted jobs stay queued.
 */
describe('event streams under hostile clients', () => {
  let stack: Stack;
  const apis: ApiProcess[] = [];
  const streams: EventStreamClient[] = [];
  const api = async (overrides: Parameters<typeof startApiWith>[1]) => {
    const started = await startApiWith(stack, overrides);
    apis.push(started);
    return started;
  };
  const open = async (...args: Parameters<typeof openEventStream>) => {
    const stream = await openEventStream(...args);
    streams.push(stream);
    return stream;
  };
  /** Opens a stream expected to be refused: its status, Retry-After and error body (a stream that opens is closed at once). */
  const refusalOf = async (url: string, apiKey: string) => {
    const abort = new AbortController();
    const res = await fetch(url, { headers: { authorization: `Bearer ${apiKey}` }, signal: abort.signal });
    if (res.status === 200) abort.abort();
    return { status: res.status, retryAfter: res.headers.get('retry-after'), body: res.status === 200 ? undefined : ((await res.json()) as { error: { code: string } }) };
  };

  /** Events written straight into the user's change feed, `ageMs` old; their ids, in order. */
  async function feedEvents(userId: string, count: number, { ageMs = 0, payloadBytes = 0 } = {}): Promise<number[]> {
    const rows = await stack.database.sql<{ id: string }[]>`
      insert into generation_events (user_id, job_id, type, payload, created_at)
      select ${userId}, 'gen_feed_' || ${userId}, 'generation.updated',
             jsonb_build_object('generation_id', 'gen_feed_' || ${userId}, 'status', 'running', 'progress', i::float8 / ${count}, 'attempt', 1,
                                'queue_position', null, 'video_url', null, 'error', null, 'updated_at', now(), 'padding', repeat('x', ${payloadBytes}::int)),
             now() - ${ageMs}::float8 * interval '1 millisecond'
      from generate_series(1, ${count}::int) as i
      returning id`;
    return rows.map((r) => Number(r.id)).sort((a, b) => a - b);
  }

  beforeAll(async () => {
    stack = await startStack({ env: { GPU_SLOTS: '0' } });
  });
  afterAll(async () => {
    for (const s of streams) s.close();
    for (const a of apis) await a.close({ graceMs: 0 });
    await stack?.close();
  });

  test('a user may open so many streams and a process so many in all; beyond, 429 with a code, until one closes', async () => {
    const { url } = await api({ notifications: { sseMaxStreamsPerUser: 2, sseMaxStreams: 3 } });
    const [first, second, third] = [await stack.createUser('pro'), await stack.createUser('pro'), await stack.createUser('pro')];
    const mine = [await open(`${url}/v1/events`, first.apiKey), await open(`${url}/v1/events`, first.apiKey)];
    expect(mine.map((s) => s.status)).toEqual([200, 200]);

    const overUser = await refusalOf(`${url}/v1/events`, first.apiKey);
    expect(overUser).toMatchObject({ status: 429, retryAfter: expect.stringMatching(/^\d+$/), body: { error: { code: 'too_many_streams' } } });
    expect((await open(`${url}/v1/events`, second.apiKey)).status).toBe(200);
    const overProcess = await refusalOf(`${url}/v1/events`, third.apiKey);
    expect(overProcess).toMatchObject({ status: 429, body: { error: { code: 'stream_capacity_reached' } } });

    // A slot frees when its client goes away.
    mine[0].close();
    const again = await eventually(async () => {
      const stream = await openEventStream(`${url}/v1/events`, first.apiKey);
      streams.push(stream);
      return stream.status === 200 ? stream : undefined;
    }, { what: 'a freed slot' });
    expect(again.status).toBe(200);
  });

  test('a resume within the window replays what was missed; further back, the stream says to re-list and goes on live', async () => {
    const { url } = await api({ notifications: { sseResumeMaxEvents: 5, sseResumeMaxAgeMs: 60_000 } });
    const user = await stack.createUser('pro');
    const ids = await feedEvents(user.userId, 8);

    const near = await open(`${url}/v1/events`, user.apiKey, { lastEventId: String(ids[3]) });
    const replayed = await near.waitFor((events) => events.length >= 4);
    expect(replayed.map((e) => Number(e.id))).toEqual(ids.slice(4));

    const far = await open(`${url}/v1/events`, user.apiKey, { lastEventId: String(ids[1]) });
    await far.waitFor((events) => events.length >= 1);
    expect(far.events[0]).toMatchObject({ event: 'stream.resync_required', id: String(ids[7]), data: { reason: 'resume_window_exceeded', last_event_id: ids[1] } });
    const [live] = await feedEvents(user.userId, 1);
    const seen = await far.waitFor((events) => events.some((e) => e.id === String(live)));
    expect(seen.map((e) => e.event)).toEqual(['stream.resync_required', 'generation.updated']);

    const old = await stack.createUser('pro');
    await feedEvents(old.userId, 2, { ageMs: 120_000 });
    const fromStart = await open(`${url}/v1/events`, old.apiKey, { lastEventId: '0' });
    await fromStart.waitFor((events) => events.length >= 1);
    expect(fromStart.events).toEqual([expect.objectContaining({ event: 'stream.resync_required', data: expect.objectContaining({ reason: 'resume_window_exceeded' }) })]);

    const unknown = await open(`${url}/v1/events`, user.apiKey, { lastEventId: String(live + 1_000_000) });
    await unknown.waitFor((events) => events.length >= 1);
    expect(unknown.events[0]).toMatchObject({ event: 'stream.resync_required', id: String(live), data: { reason: 'unknown_event_id' } });
  });

  test("a user's queue positions are read once per interval, however many of the user's streams are open", async () => {
    const pollMs = 100;
    const { url } = await api({ notifications: { sseQueuePositionMs: pollMs } });
    const user = await stack.createUser('pro');
    const job = await apiClient(url, user.apiKey).submit({ prompt: 'waits for a GPU that never comes' });
    expect(job.status).toBe(202);
    const opened = await Promise.all(Array.from({ length: 4 }, () => open(`${url}/v1/events`, user.apiKey)));
    for (const stream of opened) await stream.waitFor((events) => events.some((e) => e.event === 'generation.queue_position'));

    // Ten reads for one user need nine intervals between them; a read per stream would take a quarter of that.
    const before = await metric(url, 'vg_sse_queue_position_reads_total');
    const began = Date.now();
    await eventually(async () => ((await metric(url, 'vg_sse_queue_position_reads_total')) >= before + 10 ? true : undefined), { intervalMs: 20 });
    expect(Date.now() - began).toBeGreaterThanOrEqual(9 * pollMs);
    for (const stream of opened) stream.close();
  });

  test('a client that reads nothing is sent no more once its socket is full, and is disconnected', async () => {
    const { url } = await api({ notifications: { sseSlowClientMs: 1_000 } });
    const user = await stack.createUser('pro');
    const slowBefore = await metric(url, 'vg_sse_streams_closed_total', { reason: 'slow_client' });
    const client = rawSocket(url);
    await client.connected;
    client.socket.write(`GET /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${user.apiKey}\r\nAccept: text/event-stream\r\n\r\n`);
    await eventually(async () => (client.received.includes('retry: 1000') ? true : undefined), { what: 'the stream to open' });
    client.socket.pause();
    // 40 MB of events, far more than the sockets' buffers hold.
    await feedEvents(user.userId, 10_000, { payloadBytes: 4_000 });

    await eventually(async () => ((await metric(url, 'vg_sse_streams_closed_total', { reason: 'slow_client' })) > slowBefore ? true : undefined), {
      what: 'the slow client to be disconnected',
    });
    // What reached the client before the cut is what the socket buffers held, not the 40 MB.
    client.socket.resume();
    await eventually(async () => (client.closed ? true : undefined), { what: 'the socket to close' });
    expect(Buffer.byteLength(client.received)).toBeLessThan(20_000_000);
  });

  test('a client that falls behind and then reads gets every event, in order, once', async () => {
    const { url } = await api({ notifications: { sseSlowClientMs: 60_000 } });
    const user = await stack.createUser('pro');
    const res = await new Promise<http.IncomingMessage>((resolve) =>
      http.get(`${url}/v1/events`, { headers: { authorization: `Bearer ${user.apiKey}`, accept: 'text/event-stream' } }, resolve),
    );
    res.setEncoding('utf8');
    res.pause();
    // 20 MB: the server stops writing when the sockets' buffers are full, and goes on once they drain.
    const inserted = await feedEvents(user.userId, 5_000, { payloadBytes: 4_000 });
    const ids: number[] = [];
    let tail = '';
    res.on('data', (chunk: string) => {
      const blocks = (tail + chunk).split('\n\n');
      tail = blocks.pop() ?? '';
      for (const block of blocks) {
        const id = /^id: (\d+)$/m.exec(block)?.[1];
        if (id) ids.push(Number(id));
      }
    });
    res.resume();
    try {
      await eventually(async () => (ids.length >= inserted.length ? true : undefined), { what: 'every event', timeoutMs: 60_000 });
      expect(ids).toEqual(inserted);
    } finally {
      res.destroy();
    }
  });

  test('revoking an API key ends its open streams within seconds, with a last event saying why', async () => {
    const { url } = await api({ notifications: { sseKeyCheckMs: 200 } });
    const user = await stack.createUser('pro');
    const other = await stack.createUser('pro');
    const revoked = [await open(`${url}/v1/events`, user.apiKey), await open(`${url}/v1/events`, user.apiKey)];
    const kept = await open(`${url}/v1/events`, other.apiKey);
    await stack.database.sql`update api_keys set revoked_at = now() where user_id = ${user.userId}`;

    for (const stream of revoked) {
      const [last] = await stream.waitFor((events) => events.some((e) => e.event === 'stream.closed'));
      expect(last).toMatchObject({ event: 'stream.closed', data: { type: 'stream.closed', reason: 'api_key_revoked' } });
      await eventually(async () => (stream.ended ? true : undefined), { what: 'the stream to end' });
    }
    await kept.waitFor((_events, comments) => comments >= 2);
    expect(kept.ended).toBe(false);
  });
});
