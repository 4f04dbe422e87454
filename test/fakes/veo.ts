import { randomBytes } from 'node:crypto';
import { FakeJobs, outcomeOf, startFakeServer, type FakeAnswer, type FakeKnobs, type FakeOutcome, type FakeRequest, type FakeServer } from './fake-server';

/**
 * A local Gemini API for Veo, after its reference (docs/backends.md says which version): POST
 * /v1beta/models/{model}:predictLongRunning with `instances` and `parameters` (key in `x-goog-api-key`) starts a
 * long-running operation `models/{model}/operations/{id}`; GET /v1beta/{name} reads it: `done`, then `error`
 * (google.rpc.Status) or `response.generateVideoResponse` with `generatedSamples[].video.uri`, or with
 * `raiMediaFilteredCount`/`raiMediaFilteredReasons` when the safety filters kept the video back; GET
 * /v1beta/models/{model} describes a model it serves (404 NOT_FOUND for another). No webhook, no cancel.
 */
interface Operation {
  id: string;
  name: string;
  outcome: FakeOutcome;
  state: 'queued' | 'running' | 'ended';
  prompt: string;
}

export interface VeoFake extends FakeServer {
  apiKey: string;
  operations: Map<string, Operation>;
  /** Operations not done: what a canceled job of ours leaves running on Veo. */
  live(): Operation[];
}

const DURATIONS = [4, 6, 8];
/** The models this fake serves (models.get answers them). */
const MODELS = ['veo-3.0-generate-001', 'veo-3.0-fast-generate-001', 'veo-3.1-generate-preview'];

const rpc = (code: number, status: string, message: string) => ({ error: { code, message, status } });

export async function startVeoFake(knobs: Partial<FakeKnobs> = {}): Promise<VeoFake> {
  const apiKey = `AIza${randomBytes(16).toString('hex')}`;
  const operations = new Map<string, Operation>();

  function view(op: Operation): unknown {
    if (op.state !== 'ended') return { name: op.name, metadata: { '@type': 'type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningMetadata' } };
    switch (op.outcome) {
      case 'succeed':
        return {
          name: op.name,
          done: true,
          response: {
            '@type': 'type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse',
            generateVideoResponse: { generatedSamples: [{ video: { uri: `${fake.url}/v1beta/files/${op.id}:download?alt=media` } }] },
          },
        };
      case 'content':
        return {
          name: op.name,
          done: true,
          response: {
            '@type': 'type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse',
            generateVideoResponse: { raiMediaFilteredCount: 1, raiMediaFilteredReasons: ['The prompt could not be submitted: it may violate our policies.'] },
          },
        };
      case 'input':
        return { name: op.name, done: true, ...rpc(3, 'INVALID_ARGUMENT', 'The prompt is not supported for this model.') };
      case 'oom':
        return { name: op.name, done: true, ...rpc(8, 'RESOURCE_EXHAUSTED', 'Resource has been exhausted (e.g. check quota).') };
      default:
        return { name: op.name, done: true, ...rpc(13, 'INTERNAL', 'An internal error has occurred.') };
    }
  }

  function start(req: FakeRequest, model: string): FakeAnswer {
    const body = (req.body ?? {}) as { instances?: Array<{ prompt?: unknown }>; parameters?: { durationSeconds?: unknown; aspectRatio?: unknown; resolution?: unknown } };
    const prompt = body.instances?.[0]?.prompt;
    if (typeof prompt !== 'string' || prompt === '') return { status: 400, body: rpc(400, 'INVALID_ARGUMENT', 'instances[0].prompt is required') };
    const params = body.parameters ?? {};
    if (params.durationSeconds !== undefined && !DURATIONS.includes(Number(params.durationSeconds))) {
      return { status: 400, body: rpc(400, 'INVALID_ARGUMENT', `durationSeconds must be one of ${DURATIONS.join(', ')}`) };
    }
    if (params.aspectRatio !== undefined && !['16:9', '9:16'].includes(String(params.aspectRatio))) {
      return { status: 400, body: rpc(400, 'INVALID_ARGUMENT', 'aspectRatio must be 16:9 or 9:16') };
    }
    const id = randomBytes(8).toString('hex');
    const op = jobs.add({ id, name: `models/${model}/operations/${id}`, outcome: outcomeOf(prompt), state: 'queued', prompt });
    operations.set(op.name, op);
    return { status: 200, body: { name: op.name } };
  }

  const fake: FakeServer = await startFakeServer((req) => {
    const key = req.headers['x-goog-api-key'] ?? req.query.get('key');
    if (key !== apiKey) return { status: 400, body: rpc(400, 'INVALID_ARGUMENT', 'API key not valid. Please pass a valid API key.') };
    const predict = /^\/v1beta\/models\/([\w.-]+):predictLongRunning$/.exec(req.path);
    if (req.method === 'POST' && predict) return start(req, predict[1]);
    const model = /^\/v1beta\/models\/([\w.-]+)$/.exec(req.path);
    if (req.method === 'GET' && model) {
      if (!MODELS.includes(model[1])) return { status: 404, body: rpc(404, 'NOT_FOUND', `models/${model[1]} is not found for API version v1beta`) };
      return { status: 200, body: { name: `models/${model[1]}`, version: '3.0', displayName: 'Veo 3', description: 'Video generation', supportedGenerationMethods: ['predictLongRunning'] } };
    }
    const read = /^\/v1beta\/(models\/[\w.-]+\/operations\/[\w-]+)$/.exec(req.path);
    if (req.method === 'GET' && read) {
      const op = operations.get(read[1]);
      return op ? { status: 200, body: view(op) } : { status: 404, body: rpc(404, 'NOT_FOUND', `Operation ${read[1]} not found.`) };
    }
    return undefined;
  }, knobs);
  const jobs = new FakeJobs<Operation>(fake.knobs, { start: () => undefined, end: () => undefined });

  const close = fake.close.bind(fake);
  return Object.assign(fake, {
    apiKey,
    operations,
    live: () => jobs.live(),
    async close() {
      jobs.stop();
      await close();
    },
  });
}
