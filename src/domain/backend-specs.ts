import { z } from 'zod';

/**
 * The generation backends a deployment drives, as the `BACKENDS` setting names them (a JSON array). Pure data: the
 * adapters (src/backend/) are built from it, and routing across several reads `capacity`, `cost_factor` and `renders`.
 */
export const BACKEND_KINDS = ['simulator', 'replicate', 'fal', 'comfyui', 'veo'] as const;
export type BackendKind = (typeof BACKEND_KINDS)[number];

const RESOLUTIONS = ['480p', '720p', '1080p'] as const;
const ASPECT_RATIOS = ['16:9', '9:16', '1:1'] as const;

/** What a backend can render; a field left out means "anything the API accepts". */
const rendersSchema = z
  .object({
    resolutions: z.array(z.enum(RESOLUTIONS)).min(1).optional(),
    aspect_ratios: z.array(z.enum(ASPECT_RATIOS)).min(1).optional(),
    /** The whole-second durations it accepts. */
    durations_seconds: z.array(z.number().int().min(1).max(60)).min(1).optional(),
    /** Takes an image to start from (a job's input_reference). */
    image_input: z.boolean().default(false),
    /** Takes a video to start from (a remix: the remixed job's video). */
    video_input: z.boolean().default(false),
  })
  .strict()
  .default({ image_input: false, video_input: false });

/** The simulator renders anything, images and remixes included. */
const simulatorRendersSchema = rendersSchema.unwrap().extend({ image_input: z.boolean().default(true), video_input: z.boolean().default(true) }).default({ image_input: true, video_input: true });

const envVarName = z.string().regex(/^[A-Z_][A-Z0-9_]*$/, 'must be an environment variable name such as REPLICATE_API_TOKEN');

const common = {
  /** Names the backend in logs, metrics and its callback path (/internal/backend/callbacks/<name>). */
  name: z.string().regex(/^[a-z0-9][a-z0-9_-]{0,39}$/, 'must be 1-40 lower-case letters, digits, _ or -'),
  base_url: z.string().url(),
  /** The environment variable that holds the backend's API key (never the key itself). */
  credentials_env: envVarName.optional(),
  /** GPU slots of this backend's own pool. */
  capacity: z.number().int().min(0),
  /** Relative price of a job here (1 = the list price); routing prefers the cheaper backend that can render a job. */
  cost_factor: z.number().positive().default(1),
  renders: rendersSchema,
};

const simulatorSpec = z.object({ ...common, kind: z.literal('simulator'), renders: simulatorRendersSchema }).strict();
const replicateSpec = z
  .object({
    ...common,
    kind: z.literal('replicate'),
    /** `owner/name` of an official model, or `owner/name:version`. */
    model: z.string().regex(/^[\w.-]+\/[\w.-]+(:[0-9a-f]{16,64})?$/, 'must be owner/name or owner/name:version'),
    /** Where the webhook signing secret is; unset: asked once of GET /v1/webhooks/default/secret. */
    webhook_secret_env: envVarName.optional(),
  })
  .strict();
const falSpec = z
  .object({
    ...common,
    kind: z.literal('fal'),
    /** The model's endpoint id, e.g. `fal-ai/wan/v2.2-a14b/text-to-video`. */
    model: z.string().regex(/^[\w.-]+\/[\w.-]+(\/[\w.-]+)*$/, 'must be an endpoint id such as fal-ai/wan-t2v'),
    /** The JSON Web Key Set fal signs webhooks with. */
    jwks_url: z.string().url().default('https://rest.alpha.fal.ai/.well-known/jwks.json'),
  })
  .strict();
const comfyuiSpec = z
  .object({
    ...common,
    kind: z.literal('comfyui'),
    /** An API-format workflow (JSON file) whose strings hold {{prompt}}, {{seed}}, {{width}}, {{height}}, {{frames}}… */
    workflow_path: z.string().min(1),
    /** The output node's key in the workflow's history outputs whose first file is the video. Unset: the first with a file. */
    output_node: z.string().min(1).optional(),
    /** Frames per second of the workflow's video, to turn a duration into {{frames}}. */
    fps: z.number().int().min(1).default(16),
  })
  .strict();
const veoSpec = z
  .object({
    ...common,
    kind: z.literal('veo'),
    /** e.g. `veo-3.0-generate-001`. */
    model: z.string().regex(/^[\w.-]+$/, 'must be a model id such as veo-3.0-generate-001'),
  })
  .strict();

export const backendSpecSchema = z.discriminatedUnion('kind', [simulatorSpec, replicateSpec, falSpec, comfyuiSpec, veoSpec]);
export type BackendSpec = z.infer<typeof backendSpecSchema>;
export type BackendRenders = z.infer<typeof rendersSchema>;

export const backendSpecsSchema = z
  .array(backendSpecSchema)
  .min(1, 'must list at least one backend')
  .superRefine((specs, ctx) => {
    const seen = new Set<string>();
    for (const [i, spec] of specs.entries()) {
      if (seen.has(spec.name)) ctx.addIssue({ code: 'custom', path: [i, 'name'], message: `"${spec.name}" is listed twice` });
      seen.add(spec.name);
      // A ComfyUI server has no keys of its own (one behind a proxy may: then it names one).
      if (spec.kind !== 'simulator' && spec.kind !== 'comfyui' && spec.credentials_env === undefined) {
        ctx.addIssue({ code: 'custom', path: [i, 'credentials_env'], message: `a ${spec.kind} backend needs the name of the variable holding its API key` });
      }
    }
  });

/** Whether a kind of backend can stop a job it has started: Veo (Gemini API) has no cancel. */
export function backendCancels(kind: BackendKind): boolean {
  return kind !== 'veo';
}

/** A job's render parameters, as routing and the adapters check them. */
export interface RenderRequest {
  resolution: string;
  aspect_ratio: string;
  duration_seconds: number;
  image_input?: boolean;
  video_input?: boolean;
}

/** Why `renders` cannot take this request, or null when it can. */
export function cannotRender(renders: BackendRenders, request: RenderRequest): string | null {
  if (renders.resolutions && !renders.resolutions.includes(request.resolution as (typeof RESOLUTIONS)[number])) {
    return `resolution ${request.resolution} (it renders ${renders.resolutions.join(', ')})`;
  }
  if (renders.aspect_ratios && !renders.aspect_ratios.includes(request.aspect_ratio as (typeof ASPECT_RATIOS)[number])) {
    return `aspect ratio ${request.aspect_ratio} (it renders ${renders.aspect_ratios.join(', ')})`;
  }
  if (renders.durations_seconds && !renders.durations_seconds.includes(request.duration_seconds)) {
    return `${request.duration_seconds} s (it renders ${renders.durations_seconds.join(', ')} s)`;
  }
  if (request.image_input && !renders.image_input) return 'an image input';
  if (request.video_input && !renders.video_input) return 'a remix (a video input)';
  return null;
}
