import type { Db } from '../db/client';
import { applyWrite, insertQueued } from '../db/projection';
import type { GenerationInput, ProjectionWrite } from '../domain/generation';

/** Activities of the generation task queue that keep the projection in step with the workflow. */
export function createProjectionActivities({ db }: { db: Db }) {
  return {
    async recordQueued(input: GenerationInput): Promise<void> {
      await insertQueued(db, input);
    },
    async recordTransition(write: ProjectionWrite): Promise<boolean> {
      return applyWrite(db, write);
    },
  };
}
