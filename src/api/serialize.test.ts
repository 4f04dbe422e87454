import fc from 'fast-check';
import { isoString } from './serialize';

describe('isoString', () => {
  test('is Date#toISOString for every time of years 1000–9999', () => {
    const min = Date.UTC(1000, 0, 1);
    const max = Date.UTC(9999, 11, 31, 23, 59, 59, 999);
    fc.assert(
      fc.property(fc.integer({ min, max }), (ms) => {
        const d = new Date(ms);
        expect(isoString(d)).toBe(d.toISOString());
      }),
      { numRuns: 20_000 },
    );
  });

  test('hands other years to toISOString, and throws as it does for an invalid date', () => {
    for (const d of [new Date(Date.UTC(999, 11, 31, 23, 59, 59, 999)), new Date(Date.UTC(10_000, 0, 1)), new Date(-1e15), new Date(8.64e15)]) {
      expect(isoString(d)).toBe(d.toISOString());
    }
    expect(() => isoString(new Date(Number.NaN))).toThrow(RangeError);
  });
});
