/**
 * The job's state machine, shared by the workflow and the projection writer. Pure: safe inside the workflow sandbox.
 *
 *   queued → running → succeeded | failed | canceled      (queued → failed | canceled too: cancelled or timed out in queue)
 */
export const GENERATION_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'canceled'] as const;
export type GenerationStatus = (typeof GENERATION_STATUSES)[number];
export type TerminalStatus = Extract<GenerationStatus, 'succeeded' | 'failed' | 'canceled'>;

const TRANSITIONS: Record<GenerationStatus, readonly GenerationStatus[]> = {
  queued: ['running', 'failed', 'canceled'],
  // running → running: a new attempt or more progress within the same state.
  running: ['running', 'succeeded', 'failed', 'canceled'],
  succeeded: [],
  failed: [],
  canceled: [],
};

/** Rank orders states for the monotonic projection: a write never lowers a job's rank, and terminal is final. */
export const STATUS_RANK: Record<GenerationStatus, number> = { queued: 0, running: 1, succeeded: 2, failed: 2, canceled: 2 };
export const TERMINAL_RANK = 2;

export function isTerminal(status: GenerationStatus): status is TerminalStatus {
  return STATUS_RANK[status] === TERMINAL_RANK;
}

export function canTransition(from: GenerationStatus, to: GenerationStatus): boolean {
  return TRANSITIONS[from].includes(to);
}

/** The statuses a job may be in for a move to `to` to be legal: what the projection writer's guard allows. */
export function statusesBefore(to: GenerationStatus): GenerationStatus[] {
  return GENERATION_STATUSES.filter((from) => canTransition(from, to));
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
