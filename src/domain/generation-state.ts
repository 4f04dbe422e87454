/**
 * The job's state machine, shared by the workflow and the projection writer. Pure: safe inside the workflow sandbox.
 *
 *   queued → running → succeeded | failed | canceled | expired   (queued → failed | canceled | expired too)
 *
 * `expired`: no GPU slot took the job (or its retried attempt) within its queue limit; never charged.
 */
export const GENERATION_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled', 'expired'] as const;
export type GenerationStatus = (typeof GENERATION_STATUSES)[number];
export type TerminalStatus = Extract<GenerationStatus, 'succeeded' | 'failed' | 'canceled' | 'expired'>;

const TRANSITIONS: Record<GenerationStatus, readonly GenerationStatus[]> = {
  queued: ['running', 'failed', 'canceled', 'expired'],
  // running → running: a new attempt or more progress within the same state. running → expired: a retried attempt
  // that found no slot in time.
  running: ['running', 'succeeded', 'failed', 'canceled', 'expired'],
  succeeded: [],
  failed: [],
  canceled: [],
  expired: [],
};

/** Rank orders states for the monotonic projection: a write never lowers a job's rank, and terminal is final. */
export const STATUS_RANK: Record<GenerationStatus, number> = { queued: 0, running: 1, succeeded: 2, failed: 2, canceled: 2, expired: 2 };
export const TERMINAL_RANK = 2;

export function isTerminal(status: GenerationStatus): status is TerminalStatus {
  return STATUS_RANK[status] === TERMINAL_RANK;
}

export function canTransition(from: GenerationStatus, to: GenerationStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** Whether `to` follows `from` through one or more legal moves. */
export function canReach(from: GenerationStatus, to: GenerationStatus): boolean {
  const seen = new Set<GenerationStatus>();
  const next = [...TRANSITIONS[from]];
  while (next.length > 0) {
    const status = next.pop()!;
    if (status === to) return true;
    if (seen.has(status)) continue;
    seen.add(status);
    next.push(...TRANSITIONS[status]);
  }
  return false;
}

/**
 * The statuses a row may be in for a write of `to` to land: what the projection writer's guard allows. Any status `to`
 * can follow, not only its direct predecessors: the projection may have missed a step the workflow took (the GPU
 * activity's running write dies with its process while the backend's callback ends the job), and the workflow's ending
 * write must still land on a row left at queued.
 */
export function statusesBefore(to: GenerationStatus): GenerationStatus[] {
  return GENERATION_STATUSES.filter((from) => canReach(from, to));
}

export class IllegalTransitionError extends Error {
  constructor(readonly from: GenerationStatus, readonly to: GenerationStatus) {
    super(`illegal transition ${from} → ${to}`);
    this.name = 'IllegalTransitionError';
  }
}

export function assertTransition(from: GenerationStatus, to: GenerationStatus): void {
  if (!canTransition(from, to)) throw new IllegalTransitionError(from, to);
}
