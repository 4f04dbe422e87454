import { randomBytes } from 'node:crypto';
import { createDatabase, type Database } from '../db/client';
import { rateLimitHeaders, secondsUntilUtcMidnight } from './admission-headers';
import { countUserJobs, peekRequestTokens, releaseAdmission, reserveAdmission, takeRequestToken } from './admission-store';

/** The token bucket and the per-user admission lock against the run's real Postgres. */
describe('admission state in Postgres', () => {
  let database: Database;
  beforeAll(() => {
    const url = process.env.TEST_DATABASE_URL;
    if (!url) throw new Error('run through jest (test/global-setup.ts)');
    database = createDatabase(url, { max: 12 });
  });
  afterAll(async () => {
    await database?.close();
  });
  const bucket = () => `test:${randomBytes(6).toString('hex')}`;

  test('a bucket gives its burst, then refuses until it refills', async () => {
    const key = bucket();
    const rate = { burst: 3, perSecond: 5 };
    const taken = [];
    for (let i = 0; i < 4; i++) taken.push(await takeRequestToken(database.sql, key, rate));
    expect(taken.map((t) => t.allowed)).toEqual([true, true, true, false]);
    expect(taken[3].tokens).toBeLessThan(1);
    await new Promise((r) => setTimeout(r, 450)); // about two tokens at 5/s
    const level = await peekRequestTokens(database.sql, key, rate);
    expect(level).toBeGreaterThanOrEqual(1.5);
    expect(level).toBeLessThanOrEqual(3);
    expect((await takeRequestToken(database.sql, key, rate)).allowed).toBe(true);
  });

  test('concurrent requests from many connections take exactly the burst, never more', async () => {
    const key = bucket();
    const rate = { burst: 5, perSecond: 0.001 };
    const results = await Promise.all(Array.from({ length: 12 }, () => takeRequestToken(database.sql, key, rate)));
    expect(results.filter((r) => r.allowed)).toHaveLength(5);
  });

  test('a bucket never used is full, and peeking takes nothing', async () => {
    const key = bucket();
    expect(await peekRequestTokens(database.sql, key, { burst: 7, perSecond: 1 })).toBe(7);
    expect(await peekRequestTokens(database.sql, key, { burst: 7, perSecond: 1 })).toBe(7);
  });

  test('concurrent submits of one user reserve no more than the limit leaves; released or expired ones stop counting', async () => {
    const userId = `usr_${randomBytes(4).toString('hex')}`;
    const reserve = (i: number, ttlMs = 10_000) =>
      reserveAdmission(database.sql, { reservationId: `adm_${userId}_${i}`, userId, maxActive: 3, dailyQuota: 100, ttlMs });
    const outcomes = await Promise.all(Array.from({ length: 8 }, (_, i) => reserve(i)));
    const reserved = outcomes.flatMap((o, i) => (o.reserved ? [i] : []));
    expect(reserved).toHaveLength(3);
    expect(await countUserJobs(database.sql, userId)).toEqual({ active: 3, today: 3 });

    await releaseAdmission(database.sql, `adm_${userId}_${reserved[0]}`);
    await releaseAdmission(database.sql, `adm_${userId}_${reserved[1]}`);
    expect((await reserve(100, 200)).reserved).toBe(true);
    expect((await reserve(101)).reserved).toBe(true);
    expect((await reserve(102)).reserved).toBe(false);
    await new Promise((r) => setTimeout(r, 300)); // the 200 ms one lapses, as a crashed API's would
    expect((await reserve(103)).reserved).toBe(true);
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
