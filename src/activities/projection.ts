import { eq } from 'drizzle-orm';
import type { Db } from '../db/client';
import { generations } from '../db/schema';
import { isTerminal } from '../domain/generation-state';
import { endToEndTime, generationTime } from '../lib/metrics';
import { applyWrite, openRun } from '../db/projection';
import type { GenerationInput, ProjectionWrite } from '../domain/generation';

/** Job durations, observed once: only by the write that made the row terminal. */
async function observeEnd(db: Db, jobId: string): Promise<void> {
  const [row] = await db.select().from(generations).where(eq(generations.id, jobId));
  if (!row?.completedAt) return;
  const labels = { tier: row.tier, status: row.status };
  endToEndTime.observe(labels, (row.completedAt.getTime() - row.createdAt.getTime()) / 1000);
  if (row.startedAt) generationTime.observe(labels, (row.completedAt.getTime() - row.startedAt.getTime()) / 1000);
}

/** Activities of the generation task queue that keep the projection in step with the workflow. */
export function createProjectionActivities({ db }: { db: Db }) {
  return {
    async openRun({ input, runOpenedAt }: { input: GenerationInput; runOpenedAt: string }): Promise<boolean> {
      return openRun(db, input, runOpenedAt);
    },
    async recordTransition(write: ProjectionWrite): Promise<boolean> {
      const moved = await applyWrite(db, write);
      if (moved && isTerminal(write.status)) await observeEnd(db, write.jobId);
      return moved;
    },
  };
}
