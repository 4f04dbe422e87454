import { parseSnapshot, PoolSummaryCache, sawCommit, SUMMARY_MAX_AGE_MS, SUMMARY_MIN_AGE_MS } from './pool-summary-cache';

/** A snapshot that saw every transaction before 100. */
const SNAPSHOT = parseSnapshot('100:100:');

/** A promise the test settles when it chooses. */
function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => ((resolve = res), (reject = rej)));
  return { promise, resolve, reject };
}

/**
 * The pool summary's reuse rules, on a clock the test moves. Each read returns the read's number, so a test sees which
 * read it got; the change feed's newest id is whatever `feed` says; `readMs` is how long a read takes on that clock.
 */
function setup() {
  const world = { now: 10_000, feed: 1, readMs: 0, reads: 0, probes: 0, failNext: false };
  const cache = new PoolSummaryCache<number>(
    {
      newestEventId: async () => {
        world.probes++;
        return world.feed;
      },
      read: async () => {
        world.now += world.readMs;
        if (world.failNext) {
          world.failNext = false;
          throw new Error('the read failed');
        }
        return { value: ++world.reads, snapshot: SNAPSHOT };
      },
    },
    () => world.now,
  );
  /** Probes made by reads count as part of the read; `probes` below are the checks of the feed alone. */
  const checks = () => world.probes - world.reads;
  const value = async (mode: 'recent' | 'cached' | 'fresh') => (await cache.get(mode)).value;
  /** Lets the background check and read of a `recent` or `cached` call run. */
  const settle = () => new Promise((resolve) => setImmediate(resolve));
  return { world, cache, checks, value, settle };
}

describe('the pool summary cache', () => {
  test('the first caller reads, and the summary carries the feed position read just before it', async () => {
    const { world, cache } = setup();
    world.feed = 7;
    expect(await cache.get('recent')).toEqual({ at: 10_000, eventId: 7, snapshot: SNAPSHOT, value: 1 });
  });

  test('an event that commits during a read makes the next check read again', async () => {
    const { world, cache, value, settle } = setup();
    // The feed moves while the grouped read runs: the summary must carry the id from before it, not after.
    const reading = cache.get('recent');
    world.feed = 2;
    const first = await reading;
    expect(first.eventId).toBe(1);
    world.now = first.at + SUMMARY_MIN_AGE_MS;
    expect(await value('recent')).toBe(1);
    await settle();
    expect(await value('recent')).toBe(2);
  });

  test('within the minimum age it is reused without even a look at the feed', async () => {
    const { world, checks, value, settle } = setup();
    await value('recent');
    world.feed = 2; // the feed moved, but the summary is young
    world.now += SUMMARY_MIN_AGE_MS - 1;
    expect(await value('recent')).toBe(1);
    expect(await value('cached')).toBe(1);
    await settle();
    expect({ reads: world.reads, checks: checks() }).toEqual({ reads: 1, checks: 0 });
  });

  test('past the minimum age it is kept while the feed has not moved, with one look at it per minimum age', async () => {
    const { world, checks, value, settle } = setup();
    await value('recent');
    world.now += SUMMARY_MIN_AGE_MS;
    expect(await value('recent')).toBe(1);
    await settle();
    expect(checks()).toBe(1);
    world.now += SUMMARY_MIN_AGE_MS - 1;
    expect(await value('recent')).toBe(1);
    await settle();
    expect(checks()).toBe(1); // looked just now: not again
    world.now += 1;
    expect(await value('recent')).toBe(1);
    await settle();
    expect({ reads: world.reads, checks: checks() }).toEqual({ reads: 1, checks: 2 });
  });

  test('once the feed moved, `recent` answers with the summary in hand and the next caller gets the one read behind it', async () => {
    const { world, value, settle } = setup();
    await value('recent');
    world.now += SUMMARY_MIN_AGE_MS;
    world.feed = 2;
    expect(await value('recent')).toBe(1); // at once: no status read waits for a read of the whole backlog
    await settle();
    expect(world.reads).toBe(2);
    expect(await value('recent')).toBe(2);
  });

  test('at the maximum age `recent` reads now, even though the feed did not move', async () => {
    const { world, checks, value, settle } = setup();
    await value('recent');
    world.now += SUMMARY_MAX_AGE_MS - 1;
    expect(await value('recent')).toBe(1);
    await settle();
    world.now += 1;
    const before = checks();
    expect(await value('recent')).toBe(2);
    expect(checks()).toBe(before); // no look at the feed first: too old either way
  });

  test('a slow read stretches both ages to ten times its duration', async () => {
    const { world, cache, checks, value, settle } = setup();
    world.readMs = 60; // the next reuse window is 600 ms from the read's start
    const { at } = await cache.get('recent');
    world.now = at + 599;
    expect(await value('recent')).toBe(1);
    await settle();
    expect(checks()).toBe(0);
    world.now = at + 600;
    expect(await value('recent')).toBe(1);
    await settle();
    expect(checks()).toBe(1);

    world.readMs = 150; // 1.5 s: longer than the maximum age, which stretches with it
    world.now = at + SUMMARY_MAX_AGE_MS;
    const slow = await cache.get('recent');
    expect(slow.value).toBe(2);
    world.readMs = 0;
    world.feed = 2;
    world.now = slow.at + SUMMARY_MAX_AGE_MS;
    expect(await value('recent')).toBe(2); // 1 s old, under the stretched 1.5 s: not even a look at the feed
    await settle();
    expect(checks()).toBe(1);
    world.now = slow.at + 1_500;
    expect(await value('recent')).toBe(3);
  });

  test('concurrent callers share one read, and one look at the feed', async () => {
    const { world, checks, value, settle } = setup();
    expect(await Promise.all([value('fresh'), value('recent'), value('fresh')])).toEqual([1, 1, 1]);
    expect(world.reads).toBe(1);
    world.now += SUMMARY_MIN_AGE_MS;
    expect(await Promise.all([value('recent'), value('recent'), value('cached')])).toEqual([1, 1, 1]);
    await settle();
    expect(checks()).toBe(1);
  });

  test('`fresh` reads now, whatever the age', async () => {
    const { value } = setup();
    await value('recent');
    expect(await value('fresh')).toBe(2);
    expect(await value('fresh')).toBe(3);
  });

  test('`cached` answers with the summary in hand and leaves the check and the read to the background', async () => {
    const { world, value, settle } = setup();
    await value('recent');
    world.feed = 2;
    world.now += SUMMARY_MIN_AGE_MS;
    expect(await value('cached')).toBe(1); // at once, though the feed moved
    await settle();
    expect(world.reads).toBe(2);
    expect(await value('cached')).toBe(2); // the next caller gets the new one
  });

  test('`cached` callers during a background read share it', async () => {
    const gate = deferred<void>();
    const world = { now: 0, feed: 1, reads: 0 };
    const cache = new PoolSummaryCache<number>(
      {
        newestEventId: async () => world.feed,
        read: async () => {
          if (world.reads > 0) await gate.promise;
          return { value: ++world.reads, snapshot: SNAPSHOT };
        },
      },
      () => world.now,
    );
    await cache.get('recent');
    world.now += SUMMARY_MAX_AGE_MS;
    for (let i = 0; i < 5; i++) expect((await cache.get('cached')).value).toBe(1);
    gate.resolve();
    await new Promise((resolve) => setImmediate(resolve));
    expect(world.reads).toBe(2);
    expect((await cache.get('cached')).value).toBe(2);
  });

  test('a failed read reaches a `recent` caller that waited for it, keeps the summary in hand, and the next caller reads again', async () => {
    const { world, value, settle } = setup();
    await value('recent');
    world.now += SUMMARY_MAX_AGE_MS;
    world.failNext = true;
    await expect(value('recent')).rejects.toThrow('the read failed');
    expect(await value('recent')).toBe(2);

    // On the submit path the failure is swallowed: the summary in hand serves, and the next caller tries again.
    world.now += SUMMARY_MAX_AGE_MS;
    world.failNext = true;
    expect(await value('cached')).toBe(2);
    await settle();
    expect(await value('cached')).toBe(2);
    await settle();
    expect(await value('cached')).toBe(3);
  });

  test('a snapshot saw a committed transaction that ended before it was taken, and no other', () => {
    const snapshot = parseSnapshot('100:105:101,103');
    expect([99n, 100n, 101n, 102n, 103n, 104n, 105n, 106n].map((xid) => sawCommit(snapshot, xid))).toEqual([true, true, false, true, false, true, false, false]);
    expect(parseSnapshot('7:7:')).toEqual({ xmin: 7n, xmax: 7n, inProgress: new Set() });
  });

  /** A summary that counts queued jobs; each read answers when the test says, with the snapshot the test gives. */
  function admissions() {
    const world = { now: 0, queued: 5 };
    const answers: ((snapshot: string) => void)[] = [];
    const cache = new PoolSummaryCache<{ queued: number }>(
      {
        newestEventId: async () => 1,
        read: () => new Promise((resolve) => answers.push((snapshot) => resolve({ value: { queued: world.queued }, snapshot: parseSnapshot(snapshot) }))),
      },
      () => world.now,
    );
    /** Reads now; `answer` settles it with a snapshot. */
    const read = async () => {
      const reading = cache.get('fresh');
      await new Promise((resolve) => setImmediate(resolve));
      return { answer: (snapshot: string) => (answers.shift()!(snapshot), reading) };
    };
    const admit = (xid: bigint) => cache.noteCommitted(xid, (summary) => (summary.queued += 1));
    return { world, cache, read, admit };
  }

  test('an admission the summary in hand did not see is added to it, and to later reads until one saw it', async () => {
    const { world, cache, read, admit } = admissions();
    await (await read()).answer('100:100:');
    admit(100n); // committed after the read's snapshot
    expect((await cache.get('cached')).value).toEqual({ queued: 6 });
    // The next read's snapshot still shows it in progress: it is added there too.
    expect((await (await read()).answer('100:101:100')).value).toEqual({ queued: 6 });
    // One that saw it counts it itself; it is not added again, nor to any read after.
    world.queued = 6;
    expect((await (await read()).answer('101:101:')).value).toEqual({ queued: 6 });
    expect((await (await read()).answer('100:102:100')).value).toEqual({ queued: 6 });
  });

  test('an admission that commits while a read is under way counts once, whichever side of the commit its snapshot fell', async () => {
    const { world, cache, read, admit } = admissions();
    await (await read()).answer('100:100:');
    // The snapshot was taken before the commit: the job is added to the summary in hand and to the new one.
    const before = await read();
    admit(100n);
    expect((await cache.get('cached')).value).toEqual({ queued: 6 });
    expect((await before.answer('100:100:')).value).toEqual({ queued: 6 });
    // The snapshot was taken after the commit: the read counts it; nothing is added.
    const after = await read();
    admit(101n);
    world.queued = 7;
    expect((await after.answer('102:102:')).value).toEqual({ queued: 7 });
  });
});
