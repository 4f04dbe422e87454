import { randomBytes } from 'node:crypto';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { floodStreams, slowHeaderSockets } from './hostile-clients';
import { pacedRequests, type PacedFigures } from './paced-http';

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

/** The hostile parts; a run may leave some out (`npm run abuse -- --only streams,slow`) to see what each costs. */
export const ATTACK_PARTS = ['streams', 'bogus', 'slow', 'flood', 'replay'] as const;
export type AttackPart = (typeof ATTACK_PARTS)[number];

export interface AttackPlan {
  baseUrl: string;
  seconds: number;
  parts: AttackPart[];
  streams: { apiKey: string; count: number; perSecond: number; lastEventId: string };
  bogusTokens: { connections: number; perSecond: number };
  slowSockets: { count: number; lineEveryMs: number; checkAfterMs: number };
  submitFlood: { apiKey: string; amount: number; perSecond: number; connections: number };
  replayFlood: { apiKey: string; path: string; perSecond: number; connections: number };
}

let startedAt = Date.now();
const prompt = (n: number) => JSON.stringify({ prompt: `a steady stream of prompts, number ${n}` });
const key = () => randomBytes(12).toString('hex');

async function normal(plan: NormalPlan, startAt: number) {
  const auth = { authorization: `Bearer ${plan.apiKey}` };
  const durationMs = plan.seconds * 1000;
  // A user of the service is already connected (keep-alive) when the measurement starts, in both phases alike.
  const connected = { warmUpPath: '/v1/usage', startAt };
  const [list, submit] = await Promise.all([
    pacedRequests({ baseUrl: plan.baseUrl, path: () => '/v1/generations?limit=20', headers: () => auth, rate: plan.listPerSecond, durationMs, connections: 4, ...connected }),
    pacedRequests({
      ...connected,
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
  const on = (part: AttackPart) => plan.parts.includes(part);
  // A part left out answers with empty figures.
  const skipped = async (): Promise<PacedFigures> => ({ sent: 0, answered: 0, outcomes: {}, dropped: 0, p50Ms: 0, p99Ms: 0, maxMs: 0, seconds: 0, slowest: [], windows: [] });
  const streams = on('streams') ? floodStreams({ baseUrl, ...plan.streams }) : undefined;
  const { hostname, port } = new URL(baseUrl);
  const [slowSockets, bogusTokens, submitFlood, replayFlood] = await Promise.all([
    on('slow')
      ? slowHeaderSockets({ host: hostname, port: Number(port), ...plan.slowSockets })
      : { opened: 0, answers: {}, openAfterCheck: 0, firstClosedMs: null, lastClosedMs: null, connectErrors: 0 },
    on('bogus')
      ? pacedRequests({
          baseUrl,
          path: () => '/v1/generations?limit=20',
          headers: () => ({ authorization: `Bearer vg_${randomBytes(24).toString('base64url')}` }),
          rate: plan.bogusTokens.perSecond,
          durationMs,
          connections: plan.bogusTokens.connections,
          maxPending: plan.bogusTokens.connections * 4,
        })
      : skipped(),
    on('flood')
      ? pacedRequests({
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
        })
      : skipped(),
    on('replay')
      ? pacedRequests({
          baseUrl,
          method: 'POST',
          path: () => plan.replayFlood.path,
          headers: () => ({ authorization: `Bearer ${plan.replayFlood.apiKey}` }),
          rate: plan.replayFlood.perSecond,
          durationMs,
          connections: plan.replayFlood.connections,
          maxPending: plan.replayFlood.connections * 4,
        })
      : skipped(),
  ]);
  // Whatever the floods took, the streams were open for the whole attack.
  if (streams) {
    await new Promise((r) => setTimeout(r, Math.max(0, durationMs - (Date.now() - startedAt))));
    streams.close();
  }
  const noStreams = { outcomes: {}, accepted: 0, endedByServer: 0, events: 0, bytes: 0, eventTypes: {} };
  return { streams: streams?.figures ?? noStreams, bogusTokens, slowSockets, submitFlood, replayFlood };
}

async function main(): Promise<void> {
  const plan = JSON.parse(process.env.ABUSE_PLAN ?? '{}') as NormalPlan & AttackPlan & { startAt?: number };
  const startAt = plan.startAt ?? Date.now();
  // How late this process's own event loop ran: a latency it measured includes that much of its own delay.
  const loop = monitorEventLoopDelay({ resolution: 10 });
  let result: object;
  if (process.argv[2] === 'attack') {
    // Both clients of a phase start together, whatever loading each took.
    await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())));
    startedAt = Date.now();
    loop.enable();
    result = await attack(plan);
  } else {
    loop.enable();
    result = await normal(plan, startAt);
  }
  loop.disable();
  const loopDelay = { p99Ms: Math.round(loop.percentile(99) / 1e5) / 10, maxMs: Math.round(loop.max / 1e5) / 10 };
  process.stdout.write(`RESULT ${JSON.stringify({ ...result, loopDelay })}\n`);
}

if (require.main === module) {
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
