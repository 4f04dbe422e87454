import { randomBytes } from 'node:crypto';
import { floodStreams, slowHeaderSockets } from './hostile-clients';
import { pacedRequests } from './paced-http';

/**
 * The clients of `npm run abuse`, each run as a process of its own so that neither shares an event loop with the other,
 * with the API, or with the stack's worker: `normal` is one well-behaved user listing and submitting at a steady rate;
 * `attack` is every hostile client at once. The plan comes as JSON in ABUSE_PLAN; the figures go to stdout as one line,
 * `RESULT <json>`.
 */
export interface NormalPlan {
  baseUrl: string;
  apiKey: string;
  seconds: number;
  listPerSecond: number;
  submitsPerSecond: number;
}

export interface AttackPlan {
  baseUrl: string;
  seconds: number;
  streams: { apiKey: string; count: number; perSecond: number; lastEventId: string };
  bogusTokens: { connections: number; perSecond: number };
  slowSockets: { count: number; lineEveryMs: number; checkAfterMs: number };
  submitFlood: { apiKey: string; amount: number; perSecond: number; connections: number };
  replayFlood: { apiKey: string; path: string; perSecond: number; connections: number };
}

const prompt = (n: number) => JSON.stringify({ prompt: `a steady stream of prompts, number ${n}` });
const key = () => randomBytes(12).toString('hex');

async function normal(plan: NormalPlan) {
  const auth = { authorization: `Bearer ${plan.apiKey}` };
  const durationMs = plan.seconds * 1000;
  const [list, submit] = await Promise.all([
    pacedRequests({ baseUrl: plan.baseUrl, path: () => '/v1/generations?limit=20', headers: () => auth, rate: plan.listPerSecond, durationMs, connections: 4 }),
    pacedRequests({
      baseUrl: plan.baseUrl,
      method: 'POST',
      path: () => '/v1/generations',
      headers: () => ({ ...auth, 'idempotency-key': key() }),
      body: prompt,
      rate: plan.submitsPerSecond,
      durationMs,
      connections: 2,
    }),
  ]);
  return { list, submit };
}

async function attack(plan: AttackPlan) {
  const { baseUrl } = plan;
  const durationMs = plan.seconds * 1000;
  const streams = floodStreams({ baseUrl, ...plan.streams });
  const { hostname, port } = new URL(baseUrl);
  const [slowSockets, bogusTokens, submitFlood, replayFlood] = await Promise.all([
    slowHeaderSockets({ host: hostname, port: Number(port), ...plan.slowSockets }),
    pacedRequests({
      baseUrl,
      path: () => '/v1/generations?limit=20',
      headers: () => ({ authorization: `Bearer vg_${randomBytes(24).toString('base64url')}` }),
      rate: plan.bogusTokens.perSecond,
      durationMs,
      connections: plan.bogusTokens.connections,
      maxPending: plan.bogusTokens.connections * 4,
    }),
    pacedRequests({
      baseUrl,
      method: 'POST',
      path: () => '/v1/generations',
      headers: () => ({ authorization: `Bearer ${plan.submitFlood.apiKey}`, 'idempotency-key': key() }),
      body: prompt,
      rate: plan.submitFlood.perSecond,
      amount: plan.submitFlood.amount,
      durationMs,
      connections: plan.submitFlood.connections,
      maxPending: plan.submitFlood.connections * 4,
    }),
    pacedRequests({
      baseUrl,
      method: 'POST',
      path: () => plan.replayFlood.path,
      headers: () => ({ authorization: `Bearer ${plan.replayFlood.apiKey}` }),
      rate: plan.replayFlood.perSecond,
      durationMs,
      connections: plan.replayFlood.connections,
      maxPending: plan.replayFlood.connections * 4,
    }),
  ]);
  // Whatever the floods took, the streams were open for the whole attack.
  streams.close();
  return { streams: streams.figures, bogusTokens, slowSockets, submitFlood, replayFlood };
}

async function main(): Promise<void> {
  const plan = JSON.parse(process.env.ABUSE_PLAN ?? '{}') as NormalPlan & AttackPlan & { startAt?: number };
  // Both clients of a phase start together, whatever loading each took.
  await new Promise((r) => setTimeout(r, Math.max(0, (plan.startAt ?? 0) - Date.now())));
  const result = process.argv[2] === 'attack' ? await attack(plan) : await normal(plan);
  process.stdout.write(`RESULT ${JSON.stringify(result)}\n`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
