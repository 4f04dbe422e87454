import { decodeCursor, encodeCursor } from './serialize';

describe('list cursors', () => {
  const raw = (time: unknown, id: unknown = 'gen_1') => Buffer.from(JSON.stringify([time, id])).toString('base64url');

  test('a cursor carries its time exactly, microseconds and all', () => {
    const position = { createdAt: '2026-03-01T00:00:00.123456Z', id: 'gen_1' };
    expect(decodeCursor(encodeCursor(position))).toEqual(position);
    expect(decodeCursor(raw('2026-03-01T00:00:00.123Z'))).toEqual({ createdAt: '2026-03-01T00:00:00.123Z', id: 'gen_1' });
  });

  test('only a time Postgres reads as itself passes: no rolled-over fields, other forms or years it refuses', () => {
    for (const time of ['2026-02-30T00:00:00Z', '2026-01-01T24:00:00Z', '2026-01-01T00:00:00.1234567Z', '2026-01-01 00:00:00Z', '2026-01-01T00:00:00+01:00', '0000-01-01T00:00:00Z', 1767225600000, null]) {
      expect(decodeCursor(raw(time))).toBeNull();
    }
    expect(decodeCursor(raw('2026-01-01T00:00:00Z', 'gen_\u0000'))).toBeNull();
    expect(decodeCursor('not base64 json')).toBeNull();
  });
});
