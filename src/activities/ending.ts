import { settleCredits } from '../credits/ledger';
import type { Db } from '../db/client';
import type { GenerationRequest, ProjectionWrite } from '../domain/generation';
import { creditsFor, type PriceRules } from '../domain/pricing';
import { scaledCredits } from '../domain/routing';
import { isTerminal } from '../domain/generation-state';
import type { GenerationEndedInput } from './notify';
import { createProjectionActivities } from './projection';

/** How a job ended, for its one ending. */
export interface GenerationEnding {
  /** The terminal projection write: the workflow's own (endingWrite of its state), or the reconciler's for a run ended from outside. */
  write: ProjectionWrite;
  userId: string;
  /** The request's per-job webhook_url, if any. */
  webhookUrl: string | null;
  /** ISO time the job ended: the notification's timestamp. */
  endedAt: string;
  /**
   * A routed run's charge: the request's price on the backend that ran the job (its cost factor). The reservation covered
   * the dearest backend; the rest is released in the same settlement. Unset: the reservation is captured whole.
   */
  charge?: { request: Pick<GenerationRequest, 'duration_seconds' | 'resolution' | 'priority'>; costFactor: number };
}

/**
 * A job's ending, the only one: the generation workflow runs it as its last activity, and the reconciler runs it for a
 * job whose workflow was ended from outside (terminated, timed out) and so never will. Each step is idempotent (one
 * settlement per reservation, a monotonic projection write, one notification per job and event), so a retry, or the
 * reconciler after a workflow that got halfway, completes it without doing anything twice.
 */
export function createEndingActivities({ db, notifyEnded, pricing }: { db: Db; notifyEnded: (input: GenerationEndedInput) => Promise<void>; pricing?: PriceRules }) {
  const { recordTransition } = createProjectionActivities({ db });
  return {
    /** Settles the credits, writes the terminal row and notifies the user. Returns whether the write moved the row. */
    async endGeneration({ write, userId, webhookUrl, endedAt, charge }: GenerationEnding): Promise<boolean> {
      if (!isTerminal(write.status)) throw new Error(`endGeneration: ${write.jobId} is ${write.status}, not terminal`);
      // Credits first: once a client sees the job ended, its usage already shows the settlement.
      const credits = charge ? scaledCredits(creditsFor(charge.request, pricing), charge.costFactor) : undefined;
      await settleCredits(db, write.jobId, write.status === 'succeeded' ? 'capture' : 'release', credits);
      const moved = await recordTransition(write);
      await notifyEnded({ jobId: write.jobId, userId, status: write.status, webhookUrl, endedAt });
      return moved;
    },
  };
}
