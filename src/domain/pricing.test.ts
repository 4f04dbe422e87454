import { BATCH_FIRST_JOB_PRIORITY, BATCH_PRIORITY, DEFAULT_PRIORITY, FIRST_JOB_PRIORITY, firstJobPriority, priorityOf } from './generation';
import { creditsFor, gpuTimeFactor } from './pricing';

describe('lanes in pricing and priority keys', () => {
  const rules = { batchPriceFactor: 0.5 };

  test('a batch job pays the batch share, rounded up and at least 1; an interactive one (or no field) the full price', () => {
    expect(creditsFor({ duration_seconds: 5, resolution: '720p' }, rules)).toBe(10);
    expect(creditsFor({ duration_seconds: 5, resolution: '720p', priority: 'interactive' }, rules)).toBe(10);
    expect(creditsFor({ duration_seconds: 5, resolution: '720p', priority: 'batch' }, rules)).toBe(5);
    expect(creditsFor({ duration_seconds: 3, resolution: '480p', priority: 'batch' }, rules)).toBe(2);
    expect(creditsFor({ duration_seconds: 1, resolution: '480p', priority: 'batch' }, { batchPriceFactor: 0.01 })).toBe(1);
  });

  test('deadlines scale by GPU time, whatever the lane', () => {
    const batch = { duration_seconds: 10, resolution: '720p', priority: 'batch' } as const;
    expect(gpuTimeFactor(batch)).toBe(2);
  });

  test('every batch level lies below every interactive one; a first job is raised within its lane', () => {
    expect(priorityOf({})).toBe('interactive');
    expect([firstJobPriority(0, true), firstJobPriority(3, true)]).toEqual([FIRST_JOB_PRIORITY, DEFAULT_PRIORITY]);
    expect([firstJobPriority(0, true, 'batch'), firstJobPriority(3, true, 'batch'), firstJobPriority(0, false, 'batch')]).toEqual([BATCH_FIRST_JOB_PRIORITY, BATCH_PRIORITY, BATCH_PRIORITY]);
    expect(Math.min(BATCH_FIRST_JOB_PRIORITY, BATCH_PRIORITY)).toBeGreaterThan(Math.max(FIRST_JOB_PRIORITY, DEFAULT_PRIORITY));
    // Temporal's default number of levels is 5: both batch levels must exist on a server with the defaults.
    expect(BATCH_PRIORITY).toBeLessThanOrEqual(5);
  });
});
