import { randomBytes } from 'node:crypto';
import { createDatabase, type Database } from '../db/client';
import { rateLimitHeaders, secondsUntilUtcMidnight } from './admission-headers';
import { peekRequestTokens, takeRequestToken, withUserAdmissionLock } from './admission-store';

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

  test('one user’s admissions run one at a time across connections; other users do not wait', async () => {
    const user = `usr_${randomBytes(4).toString('hex')}`;
    const events: string[] = [];
    const hold = (name: string, ms: number) =>
      withUserAdmissionLock(database.sql, user, async () => {
        events.push(`${name}:in`);
        await new Promise((r) => setTimeout(r, ms));
        events.push(`${name}:out`);
      });
    const other = withUserAdmissionLock(database.sql, `${user}-other`, async () => events.push('other'));
    await Promise.all([hold('a', 150), hold('b', 10), other]);
    const a = events.indexOf('a:in');
    const b = events.indexOf('b:in');
    const [first, second] = a < b ? ['a', 'b'] : ['b', 'a'];
    expect(events.indexOf(`${first}:out`)).toBeLessThan(events.indexOf(`${second}:in`));
    expect(events.indexOf('other')).toBeLessThan(events.indexOf('a:out'));
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
