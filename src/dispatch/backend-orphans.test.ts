import { backendClientKey, parseBackendClientKey } from '../domain/generation';
import { callbackOwnership, type AttemptRecord } from './backend-orphans';

describe('whose provider job a webhook names', () => {
  const runOpenedAt = '2026-12-03T10:00:00.123Z';
  const key = (attempt: number, run = runOpenedAt) => parseBackendClientKey(backendClientKey('gen_1', run, attempt))!;
  const record = (patch: Partial<AttemptRecord> = {}): AttemptRecord => ({ runOpenedAt, attempt: 1, backendJobId: 'followed', ended: false, ...patch });

  test('the job its attempt follows, or any job of an attempt not accepted yet, is followed', () => {
    expect(callbackOwnership(record(), key(1), 'followed')).toBe('follows');
    expect(callbackOwnership(record({ attempt: 0, backendJobId: null }), key(1), 'fast')).toBe('follows');
    expect(callbackOwnership(record({ attempt: 1 }), key(2), 'next')).toBe('follows');
    expect(callbackOwnership(record({ backendJobId: null }), key(1), 'sync')).toBe('follows');
  });

  test('another job of the same attempt is an orphan (an unanswered submit created it)', () => {
    expect(callbackOwnership(record(), key(1), 'orphan')).toBe('orphan');
  });

  test('a job of an attempt that has ended or moved on is over', () => {
    expect(callbackOwnership(record({ attempt: 2 }), key(1), 'followed')).toBe('over');
    expect(callbackOwnership(record({ ended: true }), key(1), 'followed')).toBe('over');
    expect(callbackOwnership(record(), key(1, '2026-12-03T11:00:00.000Z'), 'followed')).toBe('over');
    expect(callbackOwnership(null, key(1), 'followed')).toBe('over');
  });
});
