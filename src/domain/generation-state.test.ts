import fc from 'fast-check';
import { classifyError, GENERATION_ERROR_CODES } from './generation-errors';
import { canTransition, GENERATION_STATUSES, isTerminal, STATUS_RANK, statusesBefore, type GenerationStatus } from './generation-state';

describe('the generation state machine', () => {
  test('terminal states are final; nothing returns to queued', () => {
    for (const from of GENERATION_STATUSES) {
      if (isTerminal(from)) expect(GENERATION_STATUSES.filter((to) => canTransition(from, to))).toEqual([]);
      expect(canTransition(from, 'queued')).toBe(false);
    }
  });

  test('every legal move keeps or raises the rank the projection orders by', () => {
    for (const from of GENERATION_STATUSES) {
      for (const to of GENERATION_STATUSES) {
        if (canTransition(from, to)) expect(STATUS_RANK[to]).toBeGreaterThanOrEqual(STATUS_RANK[from]);
      }
    }
  });

  test('the projection guard allows every move along a path of the table, and nothing backwards or out of an end', () => {
    // A random walk through the table: the projection may see any later state of it after any earlier one, having missed
    // the writes between (a running write lost with its process while a callback ended the job).
    const walk = fc.array(fc.nat(), { maxLength: 6 }).map((choices) => {
      const path: GenerationStatus[] = ['queued'];
      for (const choice of choices) {
        const options = GENERATION_STATUSES.filter((to) => canTransition(path[path.length - 1], to));
        if (options.length === 0) break;
        path.push(options[choice % options.length]);
      }
      return path;
    });
    fc.assert(
      fc.property(walk, (path) => {
        for (let i = 0; i < path.length; i++) {
          for (let j = i + 1; j < path.length; j++) expect(statusesBefore(path[j])).toContain(path[i]);
        }
      }),
    );
    for (const to of GENERATION_STATUSES) {
      for (const from of statusesBefore(to)) {
        expect(isTerminal(from)).toBe(false);
        expect(STATUS_RANK[to]).toBeGreaterThanOrEqual(STATUS_RANK[from]);
      }
    }
    expect(statusesBefore('queued')).toEqual([]);
    expect(statusesBefore('succeeded')).toEqual(['queued', 'running']);
  });

  test('each error code maps to one terminal status; only infrastructure failures retry as a new attempt', () => {
    const codes = GENERATION_ERROR_CODES;
    const retried = codes.filter((c) => classifyError(c).retryAttempt);
    expect(retried.sort()).toEqual(['backend_internal_error', 'backend_unavailable', 'gpu_unavailable']);
    expect(classifyError('canceled_by_user').status).toBe('canceled');
    for (const code of codes) expect(isTerminal(classifyError(code).status)).toBe(true);
  });
});
