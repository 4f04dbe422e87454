import type { Db } from '../db/client';
import { applyWrite, openRun } from '../db/projection';
import type { GenerationInput, ProjectionWrite } from '../domain/generation';

/** Activities of the generation task queue that keep the projection in step with the workflow. */
export function createProjectionActivities({ db }: { db: Db }) {
  return {
    async openRun({ input, runOpenedAt }: { input: GenerationInput; runOpenedAt: string }): Promise<boolean> {
      return openRun(db, input, runOpenedAt);
    },
    async recordTransition(write: ProjectionWrite): Promise<boolean> {
      return applyWrite(db, write);
    },
  };
}
