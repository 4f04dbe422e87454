import type { GenerationRequest } from './generation';

/** Credits per second of video, by resolution: cost follows GPU time. */
const CREDITS_PER_SECOND: Record<GenerationRequest['resolution'], number> = { '480p': 1, '720p': 2, '1080p': 4 };

export function creditsFor(request: Pick<GenerationRequest, 'duration_seconds' | 'resolution'>): number {
  return request.duration_seconds * CREDITS_PER_SECOND[request.resolution];
}

/** Relative GPU time of a request, for deadlines: 5 s of 720p is 1. */
export function gpuTimeFactor(request: Pick<GenerationRequest, 'duration_seconds' | 'resolution'>): number {
  return creditsFor(request) / creditsFor({ duration_seconds: 5, resolution: '720p' });
}
