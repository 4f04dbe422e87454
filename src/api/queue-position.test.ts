import { etaSeconds, jobsAhead } from './queue-position';

describe('queue position under weighted fair dispatch', () => {
  const user = (weight: number, queued: number, oldestAt: number) => ({ weight, queued, oldestAt });

  test('alone, a user’s k-th job has k ahead', () => {
    expect([0, 1, 5].map((k) => jobsAhead(k, user(1, 10, 0), []))).toEqual([0, 1, 5]);
  });

  test('equal users alternate; ties go to the one waiting longest', () => {
    const early = user(1, 10, 100);
    const late = user(1, 2, 200);
    expect([0, 1, 2, 3].map((k) => jobsAhead(k, early, [late]))).toEqual([0, 2, 4, 5]);
    expect([0, 1].map((k) => jobsAhead(k, late, [early]))).toEqual([1, 3]);
  });

  test('a weight-3 user is served three times for each turn of a weight-1 user', () => {
    const free = user(1, 10, 100);
    const pro = user(3, 30, 200);
    // The free user's 2nd job waits for its own 1st and five of the pro user's (the sixth ties, and the free user is older).
    expect(jobsAhead(1, free, [pro])).toBe(1 + 5);
    // The pro user's 6th job (k = 5) waits for its five and two of the free user's.
    expect(jobsAhead(5, pro, [free])).toBe(5 + 2);
  });

  test('the ETA is the position over the service rate; unknown without recent completions', () => {
    expect(etaSeconds(4, { capacity: 2, meanRunSeconds: 10 })).toBe(20);
    expect(etaSeconds(4, { capacity: 2, meanRunSeconds: null })).toBeNull();
  });
});
