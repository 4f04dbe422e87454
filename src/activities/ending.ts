import { settleCredits } from '../credits/ledger';
import type { Db } from '../db/client';
import type { ProjectionWrite } from '../domain/generation';
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
}

/**
 * A job's ending, the only one: the generation workflow runs it as its last activity, and the reconciler runs it for a
 * job whose workflow was ended from outside (terminated, timed out) and so never will. Each step is idempotent (one
 * settlement per reservation, a monotonic projection write, one notification per job and event), so a retry, or the
 * reconciler after a workflow that got halfway, completes it without doing anything twice.
 */
export function createEndingActivities({ db, notifyEnded }: { db: Db; notifyEnded: (input: GenerationEndedInput) => Promise<void> }) {
  const { recordTransition } = createProjectionActivities({ db });
  return {
    /** Settles the credits, writes the terminal row and notifies the user. Returns whether the write moved the row. */
    async endGeneration({ write, userId, webhookUrl, endedAt }: GenerationEnding): Promise<boolean> {
      if (!isTerminal(write.status)) throw new Error(`endGeneration: ${write.jobId} is ${write.status}, not terminal`);
      // Credits first: once a client sees the job ended, its usage already shows the settlement.
      await settleCredits(db, write.jobId, write.status === 'succeeded' ? 'capture' : 'release');
      const moved = await recordTransition(write);
      await notifyEnded({ jobId: write.jobId, userId, status: write.status, webhookUrl, endedAt });
      return moved;
    },
  };
}
