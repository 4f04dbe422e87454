import { TokenBuckets } from './token-buckets';

describe('token buckets held in the process', () => {
  test('a key gets `burst` tokens, then one per 1/perSecond seconds; a token given back is there again', () => {
    const buckets = new TokenBuckets({ burst: 2, perSecond: 1 });
    expect([buckets.take('a', 0), buckets.take('a', 0), buckets.take('a', 0)]).toEqual([true, true, false]);
    expect(buckets.waitSeconds('a', 0)).toBe(1);
    expect(buckets.waitSeconds('a', 500)).toBe(0.5);
    expect(buckets.take('a', 1_000)).toBe(true);
    buckets.giveBack('a', 1_000);
    expect(buckets.take('a', 1_000)).toBe(true);
    // Another key is not affected, and a bucket never holds more than its burst.
    expect(buckets.level('b', 0)).toBe(2);
    expect(buckets.level('a', 60_000)).toBe(2);
  });

  test('at most maxKeys buckets are held: the one touched longest ago is dropped (and starts full again)', () => {
    const buckets = new TokenBuckets({ burst: 1, perSecond: 0.001, maxKeys: 3 });
    for (const key of ['a', 'b', 'c']) buckets.take(key, 0);
    buckets.take('a', 1);
    buckets.take('d', 2);
    expect(buckets.size).toBe(3);
    expect(buckets.level('b', 2)).toBe(1);
    expect(buckets.level('a', 2)).toBeLessThan(1);
    expect(buckets.level('c', 2)).toBeLessThan(1);
  });
});
