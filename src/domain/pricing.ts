import { priorityOf, type GenerationRequest } from './generation';

/** Credits per second of video, by resolution: cost follows GPU time. */
const CREDITS_PER_SECOND: Record<GenerationRequest['resolution'], number> = { '480p': 1, '720p': 2, '1080p': 4 };

/** What the deployment charges beyond GPU time: batch jobs cost this share of the price (config: BATCH_PRICE_FACTOR). */
export interface PriceRules {
  batchPriceFactor: number;
}

/**
 * A request's price in credits. A batch job pays the batch share of its GPU time, rounded up and at least 1: it takes
 * GPUs only when no interactive job wants them. Without rules (or for an interactive job) the full price.
 */
export function creditsFor(request: Pick<GenerationRequest, 'duration_seconds' | 'resolution' | 'priority'>, rules?: PriceRules): number {
  const full = request.duration_seconds * CREDITS_PER_SECOND[request.resolution];
  if (rules === undefined || priorityOf(request) !== 'batch') return full;
  return Math.max(1, Math.ceil(full * rules.batchPriceFactor));
}

/** Relative GPU time of a request, for deadlines: 5 s of 720p is 1 (whatever its lane: a batch job runs as long). */
export function gpuTimeFactor(request: Pick<GenerationRequest, 'duration_seconds' | 'resolution'>): number {
  const { duration_seconds, resolution } = request;
  return creditsFor({ duration_seconds, resolution }) / creditsFor({ duration_seconds: 5, resolution: '720p' });
}
