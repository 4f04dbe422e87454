import autocannon from 'autocannon';
import { percentile } from '../../test/scheduling-metrics';

/**
 * Load at a fixed concurrency, measured the same way on both sides of a comparison: HTTP through autocannon, anything
 * else (a Temporal client call, a postgres.js query) through `callLoad`, which keeps `concurrency` calls in flight.
 */
export interface LoadFigures {
  /** Answers that counted as success (HTTP: the expected status) per second of the run. */
  rps: number;
  ok: number;
  /** Everything else: other statuses, connection errors, timeouts, thrown calls. */
  failed: number;
  p50Ms: number;
  p99Ms: number;
  seconds: number;
  /** HTTP only: how many answers of each status. */
  statuses?: Record<string, number>;
}

export interface HttpLoadOptions {
  url: string;
  connections: number;
  /** Seconds to run; ignored when `amount` is given. */
  durationS?: number;
  /** Requests to make, then stop. */
  amount?: number;
  method?: 'GET' | 'POST';
  headers?: Record<string, string>;
  body?: string;
  /** Called before each request is sent; the request number counts from 0 across connections. */
  vary?: (n: number) => { headers?: Record<string, string>; body?: string; path?: string };
  /** The status that counts as success. */
  expect: number;
  /** Requests per second across all connections (autocannon's overallRate); unset: as fast as answers come. */
  rate?: number;
}

/** One autocannon run (HTTP/1.1 keep-alive, no pipelining). */
export async function httpLoad(options: HttpLoadOptions): Promise<LoadFigures> {
  let n = 0;
  const result = await autocannon({
    url: options.url,
    connections: options.connections,
    ...(options.amount !== undefined ? { amount: options.amount } : { duration: options.durationS ?? 10 }),
    timeout: 30,
    ...(options.rate !== undefined ? { overallRate: options.rate } : {}),
    requests: [
      {
        method: options.method ?? 'GET',
        headers: options.headers,
        body: options.body,
        setupRequest: (request) => {
          if (!options.vary) return request;
          const varied = options.vary(n++);
          return {
            ...request,
            ...(varied.path ? { path: varied.path } : {}),
            ...(varied.body !== undefined ? { body: varied.body } : {}),
            headers: { ...request.headers, ...varied.headers },
          };
        },
      },
    ],
  });
  const statuses: Record<string, number> = {};
  for (const [status, { count = 0 }] of Object.entries(result.statusCodeStats ?? {})) statuses[status] = count;
  const ok = statuses[String(options.expect)] ?? 0;
  const answered = Object.values(statuses).reduce((s, c) => s + c, 0);
  return {
    rps: ok / result.duration,
    ok,
    failed: answered - ok + result.errors,
    p50Ms: result.latency.p50,
    p99Ms: result.latency.p99,
    seconds: result.duration,
    statuses,
  };
}

/** Keeps `concurrency` calls in flight for `durationMs`; latencies of the calls that finished within it. */
export async function callLoad(call: (n: number) => Promise<unknown>, { concurrency, durationMs }: { concurrency: number; durationMs: number }): Promise<LoadFigures> {
  const latencies: number[] = [];
  let failed = 0;
  let n = 0;
  const began = performance.now();
  const deadline = began + durationMs;
  const lanes = Array.from({ length: concurrency }, async () => {
    while (performance.now() < deadline) {
      const at = performance.now();
      try {
        await call(n++);
        latencies.push(performance.now() - at);
      } catch {
        failed++;
      }
    }
  });
  await Promise.all(lanes);
  const seconds = (performance.now() - began) / 1000;
  return {
    rps: latencies.length / seconds,
    ok: latencies.length,
    failed,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    seconds,
  };
}

/** Several runs of one side as one figure: their total rate; the median of their percentiles. */
export function combine(runs: LoadFigures[]): LoadFigures {
  const ok = runs.reduce((s, r) => s + r.ok, 0);
  const seconds = runs.reduce((s, r) => s + r.seconds, 0);
  const statuses: Record<string, number> = {};
  for (const r of runs) for (const [status, n] of Object.entries(r.statuses ?? {})) statuses[status] = (statuses[status] ?? 0) + n;
  return {
    rps: ok / seconds,
    ok,
    failed: runs.reduce((s, r) => s + r.failed, 0),
    p50Ms: percentile(runs.map((r) => r.p50Ms), 50),
    p99Ms: percentile(runs.map((r) => r.p99Ms), 50),
    seconds,
    ...(runs.some((r) => r.statuses) ? { statuses } : {}),
  };
}

/**
 * Runs each side `rounds` times, taking turns (A B A B …) after one warm-up run each, so drifting background load on a
 * shared machine falls on every side alike. Returns one combined figure per side.
 */
export async function takeTurns(sides: Array<(seconds: number) => Promise<LoadFigures>>, { rounds, seconds }: { rounds: number; seconds: number }): Promise<LoadFigures[]> {
  for (const side of sides) await side(2);
  const runs: LoadFigures[][] = sides.map(() => []);
  for (let round = 0; round < rounds; round++) {
    for (const [i, side] of sides.entries()) runs[i].push(await side(seconds));
  }
  return runs.map(combine);
}
