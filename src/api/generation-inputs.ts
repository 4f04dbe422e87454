import type { Config } from '../config';
import type { Db } from '../db/client';
import { getGeneration } from '../db/projection';
import type { UserRow } from '../db/schema';
import type { GenerationRequest } from '../domain/generation';
import { ApiError } from '../wire/errors';
import { ImageRefusedError, probeImage } from './image-probe';
import { webhookLookup } from './webhook-endpoints-routes';

/**
 * A request's inputs beyond its text, checked before admission: `input_reference` must be an image the service may
 * fetch (image-probe.ts), `remix_of` one of the user's own succeeded jobs. A request without either costs nothing here.
 */

/** Image checks one user may have running in one API process, and all users together; beyond, 429 at once. */
export const IMAGE_CHECKS_PER_USER = 4;
export const IMAGE_CHECKS_MAX = 64;

export interface InputChecks {
  check(user: UserRow, request: Pick<GenerationRequest, 'input_reference' | 'remix_of'>, field?: string): Promise<void>;
}

export function createInputChecks({ db, config }: { db: Db; config: Config }): InputChecks {
  const running = new Map<string, number>();
  let total = 0;

  async function checkImage(user: UserRow, url: string, field: string): Promise<void> {
    const mine = running.get(user.id) ?? 0;
    if (mine >= IMAGE_CHECKS_PER_USER || total >= IMAGE_CHECKS_MAX) {
      const code = mine >= IMAGE_CHECKS_PER_USER ? 'too_many_input_checks' : 'input_check_capacity_reached';
      const message = mine >= IMAGE_CHECKS_PER_USER ? `at most ${IMAGE_CHECKS_PER_USER} input images are checked at once per user` : 'too many input images are being checked; retry shortly';
      throw new ApiError(429, code, message, { retry_after_seconds: 1 }, { 'Retry-After': '1' });
    }
    running.set(user.id, mine + 1);
    total++;
    try {
      await probeImage(url, { allowedHosts: config.notifications.webhookAllowedHosts, timeoutMs: config.admission.inputReferenceTimeoutMs, lookup: webhookLookup(config) });
    } catch (err) {
      if (err instanceof ImageRefusedError) throw new ApiError(400, 'invalid_input_reference', `${field}: ${err.message}`, { reason: err.reason });
      throw err;
    } finally {
      total--;
      const left = (running.get(user.id) ?? 1) - 1;
      if (left === 0) running.delete(user.id);
      else running.set(user.id, left);
    }
  }

  async function checkRemix(user: UserRow, jobId: string, field: string): Promise<void> {
    // Another user's job answers as a missing one: nothing says it exists.
    const source = await getGeneration(db, user.id, jobId);
    if (!source) throw new ApiError(404, 'remix_source_not_found', `${field}: no generation ${jobId} of yours`);
    if (source.status !== 'succeeded' || !source.videoUrl) {
      throw new ApiError(409, 'remix_source_not_succeeded', `${field}: generation ${jobId} is ${source.status}; only a succeeded generation can be remixed`, { status: source.status });
    }
  }

  return {
    async check(user, request, field = '') {
      if (request.remix_of !== undefined) await checkRemix(user, request.remix_of, `${field}remix_of`);
      if (request.input_reference !== undefined) await checkImage(user, request.input_reference, `${field}input_reference`);
    },
  };
}
