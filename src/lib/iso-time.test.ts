import fc from 'fast-check';
import { isoFromTimestamptz, isoString } from './iso-time';

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

/** A time as Postgres writes a timestamptz in a UTC session: microseconds, trailing zeros of the fraction dropped. */
function postgresText(ms: number, micros: number): string {
  const iso = new Date(ms).toISOString(); // 2026-11-29T16:31:02.123Z
  const fraction = `${iso.slice(20, 23)}${String(micros).padStart(3, '0')}`.replace(/0+$/, '');
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}${fraction ? `.${fraction}` : ''}+00`;
}

describe('isoFromTimestamptz', () => {
  test('writes what new Date(text).toISOString() writes, for every UTC timestamptz of years 1000–9999', () => {
    const [min, max] = [Date.UTC(1000, 0, 1), Date.UTC(9999, 11, 31, 23, 59, 59, 999)];
    fc.assert(
      fc.property(fc.integer({ min, max }), fc.integer({ min: 0, max: 999 }), fc.boolean(), (ms, micros, whole) => {
        const text = postgresText(whole ? ms - (ms % 1000) : ms, whole ? 0 : micros);
        expect(isoFromTimestamptz(text)).toBe(new Date(text).toISOString());
      }),
      { numRuns: 20_000 },
    );
  });

  test('reads other offsets through Date', () => {
    expect(isoFromTimestamptz('2026-11-29 17:31:02.5+01')).toBe('2026-11-29T16:31:02.500Z');
    expect(isoFromTimestamptz('2026-11-29 11:01:02-05:30')).toBe('2026-11-29T16:31:02.000Z');
  });
});
