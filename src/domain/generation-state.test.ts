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

  test('the projection guard allows exactly the moves of the table', () => {
    fc.assert(
      fc.property(fc.constantFrom(...GENERATION_STATUSES), fc.constantFrom(...GENERATION_STATUSES), (from: GenerationStatus, to: GenerationStatus) => {
        expect(statusesBefore(to).includes(from)).toBe(canTransition(from, to));
      }),
    );
  });

  test('each error code maps to one terminal status; only infrastructure failures retry as a new attempt', () => {
    const codes = GENERATION_ERROR_CODES;
    const retried = codes.filter((c) => classifyError(c).retryAttempt);
    expect(retried.sort()).toEqual(['backend_internal_error', 'backend_unavailable', 'gpu_unavailable']);
    expect(classifyError('canceled_by_user').status).toBe('canceled');
    for (const code of codes) expect(isTerminal(classifyError(code).status)).toBe(true);
  });
});
