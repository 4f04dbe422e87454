import { randomUUID } from 'node:crypto';
import { FakeJobs, outcomeOf, startFakeServer, type FakeAnswer, type FakeKnobs, type FakeOutcome, type FakeRequest, type FakeServer } from './fake-server';

/**
 * A local ComfyUI server, after its routes (docs/backends.md says which version): POST /prompt {prompt, prompt_id?,
 * client_id} validates the API-format graph and queues it ({prompt_id, number, node_errors}, or 400 {error,
 * node_errors}); GET /queue lists queue_running and queue_pending as [number, prompt_id, prompt, extra_data, outputs];
 * GET /history/{prompt_id} is `{}` until the prompt ran, then its outputs and status (status_str, completed, messages
 * with execution_error / execution_interrupted); POST /interrupt stops the running prompt; POST /queue {delete: [...]}
 * drops waiting ones; GET /system_stats describes the server and its devices. No webhooks: ComfyUI is followed by polling (or its websocket). Prompts run side by side, as on several GPUs.
 */
interface Prompt {
  id: string;
  number: number;
  outcome: FakeOutcome;
  state: 'queued' | 'running' | 'ended';
  graph: Record<string, unknown>;
  history?: unknown;
}

export interface ComfyUiFake extends FakeServer {
  prompts: Map<string, Prompt>;
  live(): Prompt[];
}

const ERRORS: Record<Exclude<FakeOutcome, 'succeed' | 'hang'>, { type: string; message: string }> = {
  content: { type: 'ValueError', message: 'prompt rejected by the safety checker node' },
  input: { type: 'ValueError', message: 'frames must be 4n+1' },
  oom: { type: 'torch.OutOfMemoryError', message: 'Allocation on device' },
  internal: { type: 'RuntimeError', message: 'Expected all tensors to be on the same device' },
};

export async function startComfyUiFake(knobs: Partial<FakeKnobs> = {}): Promise<ComfyUiFake> {
  const prompts = new Map<string, Prompt>();
  let number = 0;
  const statusOf = (str: string, completed: boolean, messages: unknown[]) => ({ status_str: str, completed, messages });

  function finish(p: Prompt, how: 'success' | 'error' | 'interrupted'): void {
    const started = ['execution_start', { prompt_id: p.id, timestamp: Date.now() }];
    if (how === 'success') {
      p.history = {
        prompt: [p.number, p.id, p.graph, {}, ['9']],
        outputs: { '9': { gifs: [{ filename: `videogen_${p.number}.mp4`, subfolder: '', type: 'output', format: 'video/h264-mp4', frame_rate: 16 }] } },
        status: statusOf('success', true, [started, ['execution_success', { prompt_id: p.id, timestamp: Date.now() }]]),
        meta: {},
      };
    } else if (how === 'interrupted') {
      p.history = { prompt: [p.number, p.id, p.graph, {}, ['9']], outputs: {}, status: statusOf('error', false, [started, ['execution_interrupted', { prompt_id: p.id, node_id: '3', node_type: 'KSampler' }]]), meta: {} };
    } else {
      const error = ERRORS[p.outcome as keyof typeof ERRORS];
      p.history = {
        prompt: [p.number, p.id, p.graph, {}, ['9']],
        outputs: {},
        status: statusOf('error', false, [started, ['execution_error', { prompt_id: p.id, node_id: '3', node_type: 'WanVideoSampler', exception_message: error.message, exception_type: error.type, traceback: [] }]]),
        meta: {},
      };
    }
  }

  function queuePrompt(req: FakeRequest): FakeAnswer {
    const body = (req.body ?? {}) as { prompt?: unknown; prompt_id?: unknown };
    const graph = body.prompt;
    const valid = graph && typeof graph === 'object' && Object.values(graph).every((n) => n && typeof n === 'object' && typeof (n as { class_type?: unknown }).class_type === 'string');
    if (!valid || Object.keys(graph as object).length === 0) {
      return { status: 400, body: { error: { type: 'prompt_no_outputs', message: 'Prompt has no outputs', details: '', extra_info: {} }, node_errors: {} } };
    }
    const id = typeof body.prompt_id === 'string' ? body.prompt_id : randomUUID();
    const p = jobs.add({ id, number: number++, outcome: outcomeOf(JSON.stringify(graph)), state: 'queued', graph: graph as Record<string, unknown> });
    prompts.set(id, p);
    return { status: 200, body: { prompt_id: id, number: p.number, node_errors: {} } };
  }

  const entry = (p: Prompt) => [p.number, p.id, p.graph, { client_id: 'videogen' }, ['9']];

  const fake: FakeServer = await startFakeServer((req) => {
    if (req.method === 'POST' && req.path === '/prompt') return queuePrompt(req);
    if (req.method === 'GET' && req.path === '/system_stats') {
      const system = { os: 'posix', python_version: '3.12.3', embedded_python: false, comfyui_version: '0.3.66', pytorch_version: '2.8.0+cu128', ram_total: 134_217_728_000, ram_free: 96_000_000_000, argv: ['main.py', '--listen'] };
      const devices = [{ name: 'cuda:0 NVIDIA H100 80GB HBM3 : cudaMallocAsync', type: 'cuda', index: 0, vram_total: 85_045_002_240, vram_free: 80_000_000_000, torch_vram_total: 0, torch_vram_free: 0 }];
      return { status: 200, body: { system, devices } };
    }
    if (req.method === 'GET' && req.path === '/queue') {
      const all = [...prompts.values()];
      return { status: 200, body: { queue_running: all.filter((p) => p.state === 'running').map(entry), queue_pending: all.filter((p) => p.state === 'queued').map(entry) } };
    }
    const history = /^\/history\/([\w-]+)$/.exec(req.path);
    if (req.method === 'GET' && history) {
      const p = prompts.get(history[1]);
      return { status: 200, body: p?.history ? { [p.id]: p.history } : {} };
    }
    if (req.method === 'POST' && req.path === '/interrupt') {
      const only = (req.body as { prompt_id?: string } | undefined)?.prompt_id;
      for (const p of prompts.values()) {
        if (p.state === 'running' && (!only || only === p.id)) {
          p.state = 'ended';
          finish(p, 'interrupted');
        }
      }
      return { status: 200, body: undefined };
    }
    if (req.method === 'POST' && req.path === '/queue') {
      for (const id of (req.body as { delete?: string[] } | undefined)?.delete ?? []) {
        const p = prompts.get(id);
        if (p?.state === 'queued') {
          p.state = 'ended';
          prompts.delete(id);
        }
      }
      return { status: 200, body: undefined };
    }
    return undefined;
  }, knobs);
  const jobs = new FakeJobs<Prompt>(fake.knobs, { start: () => undefined, end: (p) => finish(p, p.outcome === 'succeed' ? 'success' : 'error') });

  const close = fake.close.bind(fake);
  return Object.assign(fake, {
    prompts,
    live: () => jobs.live(),
    async close() {
      jobs.stop();
      await close();
    },
  });
}
