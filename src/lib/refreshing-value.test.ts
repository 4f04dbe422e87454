import { RefreshingValue } from './refreshing-value';

/** A value whose reads the test counts and settles when it chooses, on a clock the test moves. */
function setup() {
  const world = { now: 0, reads: 0, failNext: false };
  const pending: Array<() => void> = [];
  const value = new RefreshingValue<number>(
    () =>
      new Promise((resolve, reject) => {
        const n = ++world.reads;
        pending.push(() => (world.failNext ? ((world.failNext = false), reject(new Error('the read failed'))) : resolve(n)));
      }),
    { freshMs: 1_000, maxAgeMs: 10_000 },
    () => world.now,
  );
  /** Settles the reads under way, and lets what waits on them run. */
  const answer = async () => {
    for (const settle of pending.splice(0)) settle();
    await new Promise((resolve) => setImmediate(resolve));
  };
  /** The first read, answered: the value in hand is 1, read at 0. */
  const readFirst = async () => {
    const first = value.get();
    await answer();
    expect(await first).toBe(1);
  };
  return { world, value, answer, readFirst };
}

describe('a refreshing value', () => {
  test('the first caller waits for the read, and callers meanwhile share it', async () => {
    const { world, value, answer } = setup();
    const both = Promise.all([value.get(), value.get()]);
    await answer();
    expect(await both).toEqual([1, 1]);
    expect(world.reads).toBe(1);
  });

  test('while fresh it is reused without a read', async () => {
    const { world, value, readFirst } = setup();
    await readFirst();
    world.now = 999;
    expect(await value.get()).toBe(1);
    expect(world.reads).toBe(1);
  });

  test('once stale it is answered at once, and the next caller gets the value read behind it', async () => {
    const { world, value, answer, readFirst } = setup();
    await readFirst();
    world.now = 1_000;
    // No caller waits: the read under way is theirs to share, not to wait for.
    expect(await Promise.all([value.get(), value.get()])).toEqual([1, 1]);
    expect(world.reads).toBe(2);
    await answer();
    expect(await value.get()).toBe(2);
  });

  test('past the maximum age a caller waits for the read', async () => {
    const { world, value, answer, readFirst } = setup();
    await readFirst();
    world.now = 10_000;
    let got: number | undefined;
    const waiting = value.get().then((v) => (got = v));
    await new Promise((resolve) => setImmediate(resolve));
    expect(got).toBeUndefined();
    await answer();
    await waiting;
    expect(got).toBe(2);
  });

  test('a failed background read keeps the value in hand and the next caller reads again; a waited-for one fails to its caller', async () => {
    const { world, value, answer, readFirst } = setup();
    await readFirst();
    world.now = 1_000;
    world.failNext = true;
    expect(await value.get()).toBe(1);
    await answer();
    expect(await value.get()).toBe(1);
    expect(world.reads).toBe(3);
    await answer();
    expect(await value.get()).toBe(3);

    world.now = 20_000;
    world.failNext = true;
    const waited = expect(value.get()).rejects.toThrow('the read failed');
    await answer();
    await waited;
  });
});
