import { preferredWait } from './prefer-wait';

describe('preferredWait (RFC 7240 Prefer: wait)', () => {
  test.each([
    ['wait=1', 1],
    ['wait=60', 60],
    ['WAIT=5', 5],
    ['wait = 7', 7],
    ['wait="9"', 9],
    ['respond-async, wait=10', 10],
    ['wait=10; foo=bar', 10],
    ['handling=lenient,wait=3', 3],
    // Only the first wait counts.
    ['wait=4, wait=50', 4],
  ])('%s honours %i seconds', (header, seconds) => {
    expect(preferredWait(header)).toBe(seconds);
  });

  test.each([undefined, '', 'respond-async', 'wait', 'wait=', 'wait=0', 'wait=61', 'wait=600', 'wait=-1', 'wait=1.5', 'wait=soon', 'wait=07x', 'waiting=5', 'wait=100, wait=5'])(
    '%s is not honoured',
    (header) => {
      expect(preferredWait(header)).toBeUndefined();
    },
  );
});
