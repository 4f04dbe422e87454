import type { ConfiguredBackend } from '../config';
import { ComfyUiBackend } from './comfyui';
import { FalBackend } from './fal';
import { HttpGenerationBackend } from './http-backend';
import type { HttpSend } from './http-client';
import { ReplicateBackend } from './replicate';
import type { GenerationBackend } from './types';
import { VeoBackend } from './veo';

export interface BackendFactoryOptions {
  /** The API's public base URL: provider webhooks come back to <publicUrl>/internal/backend/callbacks/<name>. */
  publicUrl: string;
  timeoutMs: number;
  send?: HttpSend;
}

/** The adapter of one configured backend. */
export function createBackend(spec: ConfiguredBackend, { publicUrl, timeoutMs, send }: BackendFactoryOptions): GenerationBackend {
  const options = { callbackUrl: `${publicUrl.replace(/\/+$/, '')}/internal/backend/callbacks/${spec.name}`, timeoutMs, send };
  switch (spec.kind) {
    case 'simulator':
      return new HttpGenerationBackend({ baseUrl: spec.base_url, timeoutMs, send, renders: { name: spec.name, renders: spec.renders } });
    case 'replicate':
      return new ReplicateBackend(spec, options);
    case 'fal':
      return new FalBackend(spec, options);
    case 'comfyui':
      return new ComfyUiBackend(spec, options);
    case 'veo':
      return new VeoBackend(spec, options);
    default: {
      const unknown: never = spec;
      throw new Error(`no adapter for backend kind ${JSON.stringify(unknown)}`);
    }
  }
}

/** Every configured backend's adapter by name, in the configured order (the first is where jobs go). */
export function createBackends(specs: ConfiguredBackend[], options: BackendFactoryOptions): Map<string, GenerationBackend> {
  return new Map(specs.map((spec) => [spec.name, createBackend(spec, options)]));
}
