import type { Db } from '../db/client';
import { isTerminal } from '../domain/generation-state';
import { endToEndTime, generationTime } from '../lib/metrics';
import { applyWriteReturning, openRun, type MovedRow } from '../db/projection';
import type { GenerationInput, ProjectionWrite } from '../domain/generation';

/** Job durations, observed once: only by the write that made the row terminal (the row as that write left it). */
function observeEnd(row: MovedRow): void {
  if (row.completed_ms === null) return;
  const labels = { tier: row.tier, status: row.status };
  endToEndTime.observe(labels, (row.completed_ms - row.created_ms) / 1000);
  if (row.started_ms !== null) generationTime.observe(labels, (row.completed_ms - row.started_ms) / 1000);
}

/** Activities of the generation task queue that keep the projection in step with the workflow. */
export function createProjectionActivities({ db }: { db: Db }) {
  return {
    async openRun({ input, runOpenedAt }: { input: GenerationInput; runOpenedAt: string }): Promise<boolean> {
      return openRun(db, input, runOpenedAt);
    },
    async recordTransition(write: ProjectionWrite): Promise<boolean> {
      const moved = await applyWriteReturning(db, write);
      if (moved && isTerminal(write.status)) observeEnd(moved);
      return moved !== undefined;
    },
  };
}
