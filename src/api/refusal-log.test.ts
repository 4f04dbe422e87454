import { RefusalLog, type RepeatsWriter } from './refusal-log';

describe('RefusalLog', () => {
  const flood = { method: 'POST', route: '/v1/generations', status: 429, userId: 'u1' };
  let written: Array<Parameters<RepeatsWriter>[0]>;
  let refusals: RefusalLog;
  beforeEach(() => {
    jest.useFakeTimers();
    written = [];
    refusals = new RefusalLog((fields) => written.push(fields), { windowMs: 10_000, maxKinds: 3 });
  });
  afterEach(() => {
    refusals.flush();
    jest.useRealTimers();
  });

  test('the first refusal of a kind is written, its repeats in the window are counted into one line at its end', () => {
    const admitted = Array.from({ length: 500 }, () => refusals.admit(flood));
    expect(admitted.filter(Boolean)).toHaveLength(1);
    expect(admitted[0]).toBe(true);
    jest.advanceTimersByTime(9_999);
    expect(written).toEqual([]);
    jest.advanceTimersByTime(1);
    expect(written).toEqual([{ ...flood, repeats: 499, windowMs: 10_000 }]);
  });

  test('kinds are apart: another user, route or status is written as its own first', () => {
    expect(refusals.admit(flood)).toBe(true);
    expect(refusals.admit({ ...flood, userId: 'u2' })).toBe(true);
    expect(refusals.admit({ ...flood, route: '/v1/events' })).toBe(true);
    expect(refusals.admit(flood)).toBe(false);
    jest.advanceTimersByTime(10_000);
    // Only the kind that repeated has a line of repeats.
    expect(written).toEqual([{ ...flood, repeats: 1, windowMs: 10_000 }]);
  });

  test('a new window writes the first of each kind again; a quiet spell leaves no timer and no line', () => {
    refusals.admit(flood);
    jest.advanceTimersByTime(10_000);
    expect(jest.getTimerCount()).toBe(0);
    expect(written).toEqual([]);
    expect(refusals.admit(flood)).toBe(true);
    expect(refusals.admit(flood)).toBe(false);
  });

  test('past the limit of kinds, refusals are counted under one line with no kind', () => {
    for (const userId of ['a', 'b', 'c', 'd', 'e']) refusals.admit({ ...flood, userId });
    refusals.admit({ ...flood, userId: 'a' });
    refusals.flush();
    expect(written).toEqual([
      { ...flood, userId: 'a', repeats: 1, windowMs: 10_000 },
      { repeats: 2, windowMs: 10_000 },
    ]);
  });

  test('flush (the API stopping) writes what was counted at once', () => {
    refusals.admit(flood);
    refusals.admit(flood);
    refusals.flush();
    expect(written).toEqual([{ ...flood, repeats: 1, windowMs: 10_000 }]);
    expect(jest.getTimerCount()).toBe(0);
  });
});
