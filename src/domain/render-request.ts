import type { RenderRequest } from './backend-specs';

/**
 * What a request asks a backend to render: its shape, and whether it starts from an image or remixes a video. Apart from
 * backend-specs.ts so the workflow code can use it without the config schema.
 */
export function renderRequestOf(request: { resolution: string; aspect_ratio: string; duration_seconds: number; input_reference?: string; remix_of?: unknown }): RenderRequest {
  return {
    resolution: request.resolution,
    aspect_ratio: request.aspect_ratio,
    duration_seconds: request.duration_seconds,
    image_input: request.input_reference !== undefined,
    video_input: request.remix_of !== undefined,
  };
}
