import { handoffs, inFlightAtSubmissions, jainIndex, maxInFlight, percentile, utilisation, type BackendRun } from './scheduling-metrics';

const run = (jobId: string, submittedAt: number, completedAt: number | null, startedAt: number | null = submittedAt): BackendRun => ({ jobId, submittedAt, startedAt, completedAt });

describe('scheduling figures', () => {
  test('Jain’s index is 1 for equal shares and 1/n when one party gets all', () => {
    expect(jainIndex([5, 5, 5, 5])).toBe(1);
    expect(jainIndex([8, 0, 0, 0])).toBeCloseTo(0.25);
    expect(jainIndex([6, 4])).toBeCloseTo(100 / 104);
  });

  test('in flight counts a job from its submission to its end, queued inside the backend or not', () => {
    const runs = [run('a', 0, 10), run('b', 5, 20, 12), run('c', 10, 30), run('d', 25, null)];
    expect(inFlightAtSubmissions(runs).map((s) => s.inFlight)).toEqual([1, 2, 2, 2]);
    expect(maxInFlight(runs)).toBe(2);
  });

  test('each end is answered by the next submission; the gaps are the handoffs', () => {
    const runs = [run('a', 0, 100), run('b', 0, 150), run('c', 110, 300), run('d', 180, 400)];
    expect(handoffs(runs, 0, 1_000)).toEqual([10, 30]);
  });

  test('utilisation is busy slot time over capacity × window', () => {
    const runs = [run('a', 0, 100), run('b', 0, 50), run('c', 60, 100)];
    expect(utilisation(runs, 2, 0, 100)).toBeCloseTo(0.95);
    expect(percentile([5, 1, 4, 2, 3], 50)).toBe(3);
    expect(percentile([1, 2, 3, 4, 100], 99)).toBe(100);
  });
});
