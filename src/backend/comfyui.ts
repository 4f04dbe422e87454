import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import type { ConfiguredBackend } from '../config';
import { sendHttp, type HttpSend } from './http-client';
import { backendJob, callProvider, checkRenders, jobError } from './provider-http';
import type { ProviderOptions } from './replicate';
import { BackendRejectedError, type BackendJob, type BackendSubmitRequest, type GenerationBackend } from './types';

/**
 * A self-hosted ComfyUI server (Wan, HunyuanVideo, LTX-Video…): the configured API-format workflow, its placeholders
 * filled in, is queued with POST /prompt under a prompt_id derived from the attempt's key (so a retried submit finds
 * the same prompt), followed by polling GET /history/{id} (and GET /queue while it waits), and canceled by deleting it
 * from the queue or interrupting it.
 */
const historyEntrySchema = z.object({
  outputs: z.record(z.string(), z.record(z.string(), z.unknown())).default({}),
  status: z
    .object({
      status_str: z.string().optional(),
      completed: z.boolean().optional(),
      messages: z.array(z.tuple([z.string(), z.unknown()])).default([]),
    })
    .optional(),
});
type HistoryEntry = z.infer<typeof historyEntrySchema>;
const queueSchema = z.object({ queue_running: z.array(z.array(z.unknown())).default([]), queue_pending: z.array(z.array(z.unknown())).default([]) });
const fileSchema = z.object({ filename: z.string(), subfolder: z.string().default(''), type: z.string().default('output') });
const executionErrorSchema = z.object({ exception_message: z.string().optional(), exception_type: z.string().optional(), node_type: z.string().optional() }).passthrough();

/** Output lists a video-saving node may write to, in order of preference. */
const OUTPUT_LISTS = ['videos', 'gifs', 'images'];

const HEIGHTS: Record<string, number> = { '480p': 480, '720p': 720, '1080p': 1080 };

export class ComfyUiBackend implements GenerationBackend {
  readonly cancelStopsWork = true;
  private readonly base: string;
  private readonly send: HttpSend;
  private readonly workflow: unknown;

  constructor(
    private readonly spec: Extract<ConfiguredBackend, { kind: 'comfyui' }>,
    private readonly options: ProviderOptions,
  ) {
    this.base = spec.base_url.replace(/\/+$/, '');
    this.send = options.send ?? sendHttp;
    this.workflow = JSON.parse(readFileSync(spec.workflow_path, 'utf8'));
  }

  async submit(request: BackendSubmitRequest): Promise<BackendJob> {
    checkRenders(this.spec.name, this.spec.renders, request);
    const promptId = promptIdOf(request.client_key);
    // A retried submit whose first answer was lost: the prompt is already there under its id.
    const known = await this.find(promptId);
    if (known) return known;
    const values = this.values(request);
    await this.call('POST', '/prompt', { prompt: fill(this.workflow, values), prompt_id: promptId, client_id: 'videogen' });
    return backendJob({ id: promptId, clientKey: request.client_key, status: 'queued' });
  }

  async getJob(backendJobId: string): Promise<BackendJob> {
    const job = await this.find(backendJobId);
    if (!job) throw new BackendRejectedError(`ComfyUI knows no prompt ${backendJobId}`, 404);
    return job;
  }

  /** A waiting prompt leaves the queue; a running one is interrupted (the history then records it interrupted). */
  async cancel(backendJobId: string): Promise<BackendJob> {
    const history = await this.history(backendJobId);
    if (history) return this.read(backendJobId, history);
    const queue = queueSchema.parse(await this.call('GET', '/queue'));
    if (queue.queue_pending.some((item) => item[1] === backendJobId)) {
      await this.call('POST', '/queue', { delete: [backendJobId] });
    } else if (queue.queue_running.some((item) => item[1] === backendJobId)) {
      await this.call('POST', '/interrupt', { prompt_id: backendJobId });
    }
    return backendJob({ id: backendJobId, status: 'canceled' });
  }

  /** ComfyUI's own status route (GET /system_stats): the server answers, with its devices. */
  async health(): Promise<void> {
    await this.call('GET', '/system_stats');
  }

  private async find(promptId: string): Promise<BackendJob | null> {
    const history = await this.history(promptId);
    if (history) return this.read(promptId, history);
    const queue = queueSchema.parse(await this.call('GET', '/queue'));
    if (queue.queue_running.some((item) => item[1] === promptId)) return backendJob({ id: promptId, status: 'running' });
    if (queue.queue_pending.some((item) => item[1] === promptId)) return backendJob({ id: promptId, status: 'queued' });
    // It may have left the queue for the history between the two reads.
    const late = await this.history(promptId);
    return late ? this.read(promptId, late) : null;
  }

  private async history(promptId: string): Promise<HistoryEntry | null> {
    const json = (await this.call('GET', `/history/${encodeURIComponent(promptId)}`)) as Record<string, unknown> | null;
    const entry = json?.[promptId];
    return entry === undefined ? null : historyEntrySchema.parse(entry);
  }

  private read(promptId: string, entry: HistoryEntry): BackendJob {
    const messages = entry.status?.messages ?? [];
    if (messages.some(([event]) => event === 'execution_interrupted')) return backendJob({ id: promptId, status: 'canceled' });
    const failure = messages.find(([event]) => event === 'execution_error');
    if (entry.status?.status_str === 'error' || failure) {
      const detail = executionErrorSchema.safeParse(failure?.[1]);
      const type = detail.success ? (detail.data.exception_type ?? '') : '';
      const message = detail.success ? `${detail.data.node_type ?? 'a node'} failed: ${detail.data.exception_message ?? type}` : 'the workflow failed';
      // Out of memory is the GPU's state, worth an attempt elsewhere or later; any other node failure may be too.
      return backendJob({ id: promptId, status: 'failed', error: jobError(/OutOfMemory|out of memory/i.test(`${type} ${message}`) ? 'gpu_unavailable' : 'internal_error', message) });
    }
    if (entry.status && entry.status.completed === false) return backendJob({ id: promptId, status: 'running' });
    const file = this.outputFile(entry);
    if (!file) return backendJob({ id: promptId, status: 'failed', error: jobError('internal_error', 'the workflow wrote no video') });
    const view = new URL(`${this.base}/view`);
    view.search = new URLSearchParams(file).toString();
    return backendJob({ id: promptId, status: 'succeeded', videoUrl: view.toString() });
  }

  private outputFile(entry: HistoryEntry): z.infer<typeof fileSchema> | null {
    const nodes = this.spec.output_node ? [entry.outputs[this.spec.output_node]].filter(Boolean) : Object.values(entry.outputs);
    for (const node of nodes) {
      for (const list of OUTPUT_LISTS) {
        const files = node[list];
        const file = Array.isArray(files) ? fileSchema.safeParse(files[0]) : undefined;
        if (file?.success) return file.data;
      }
    }
    return null;
  }

  private values(request: BackendSubmitRequest): Record<string, string | number> {
    const [w, h] = request.aspect_ratio.split(':').map(Number);
    const short = HEIGHTS[request.resolution] ?? 720;
    const long = Math.round((short * Math.max(w, h)) / Math.min(w, h) / 16) * 16;
    const [width, height] = w >= h ? [long, short] : [short, long];
    // Video models take 4n+1 frames; the nearest to the duration asked.
    const frames = Math.round((request.duration_seconds * this.spec.fps) / 4) * 4 + 1;
    const seed = request.seed ?? parseInt(createHash('sha256').update(request.client_key).digest('hex').slice(0, 8), 16);
    // {{image_url}} and {{video_url}} are empty for a job without an image or a remix (a workflow that uses them needs one).
    const inputs = { image_url: request.input_reference ?? '', video_url: request.remix_of?.video_url ?? '' };
    return { prompt: request.prompt, seed, width, height, frames, fps: this.spec.fps, duration: request.duration_seconds, ...inputs };
  }

  private async call(method: string, path: string, body?: unknown): Promise<unknown> {
    const headers: Record<string, string> = this.spec.credentials ? { authorization: `Bearer ${this.spec.credentials}` } : {};
    const { json } = await callProvider({ method, url: `${this.base}${path}`, body, headers, timeoutMs: this.options.timeoutMs, send: this.send });
    return json;
  }
}

/** A UUID-shaped id that always names the same prompt for the same attempt. */
export function promptIdOf(clientKey: string): string {
  const hex = createHash('sha256').update(`comfyui:${clientKey}`).digest('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** The workflow with every `{{name}}` filled in: a string that is just one placeholder takes the value's own type. */
export function fill(node: unknown, values: Record<string, string | number>): unknown {
  if (typeof node === 'string') {
    const whole = /^\{\{(\w+)\}\}$/.exec(node);
    if (whole && whole[1] in values) return values[whole[1]];
    return node.replace(/\{\{(\w+)\}\}/g, (match, name: string) => (name in values ? String(values[name]) : match));
  }
  if (Array.isArray(node)) return node.map((item) => fill(item, values));
  if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, fill(v, values)]));
  return node;
}
