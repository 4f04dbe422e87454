import http from 'node:http';
import { percentile } from '../../test/scheduling-metrics';

/**
 * Requests sent at a fixed rate whatever the answers do (open loop), over a few keep-alive connections. A latency runs
 * from when the request was due, not from when a connection was free, so waiting behind a slow server counts. Each answer
 * is tallied by status and error code (`429 rate_limited`), so a refusal without a JSON body shows as such.
 */
export interface PacedOptions {
  baseUrl: string;
  method?: 'GET' | 'POST';
  /** The n-th request's path, headers and body (n counts from 0). */
  path: (n: number) => string;
  headers?: (n: number) => Record<string, string>;
  body?: (n: number) => string | undefined;
  /** Requests per second. */
  rate: number;
  /** Stop scheduling after this long, or after `amount` requests, whichever comes first. */
  durationMs?: number;
  amount?: number;
  connections: number;
  /** Requests due while this many are unanswered are not sent (counted as dropped): a hostile client is not unbounded. */
  maxPending?: number;
  /** Stops scheduling early when it resolves. */
  stop?: Promise<unknown>;
  /** Opens every connection first with a GET of this path (not counted), as a client already connected would be. */
  warmUpPath?: string;
  /** Starts sending at this time (ms since the epoch), after the warm-up. */
  startAt?: number;
}

export interface PacedFigures {
  sent: number;
  answered: number;
  /** `<status> <error code>` (or `<status>` for a success) → count; connection failures as `error <code>`. */
  outcomes: Record<string, number>;
  dropped: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  seconds: number;
  /** The slowest answers: when they were due (seconds into the run) and how long they took (ms). */
  slowest: Array<{ atS: number; ms: number }>;
  /** The answers by the 10 s window they were due in: whether a run's slow answers came at its start or all along. */
  windows: Array<{ fromS: number; answered: number; p50Ms: number; p99Ms: number }>;
}

const WINDOW_S = 10;

function byWindow(timeline: Array<{ atS: number; ms: number }>): PacedFigures['windows'] {
  const windows = new Map<number, number[]>();
  // The last request is due at the run's very end (its time rounded up to it): it counts in the last whole window.
  const last = Math.max(0, Math.ceil(Math.max(0, ...timeline.map((t) => t.atS)) / WINDOW_S) - 1);
  for (const { atS, ms } of timeline) {
    const from = Math.min(Math.floor(atS / WINDOW_S), last) * WINDOW_S;
    const window = windows.get(from);
    if (window) window.push(ms);
    else windows.set(from, [ms]);
  }
  return [...windows.entries()]
    .sort(([a], [b]) => a - b)
    .map(([fromS, ms]) => ({ fromS, answered: ms.length, p50Ms: round(percentile(ms, 50)), p99Ms: round(percentile(ms, 99)) }));
}

const REQUEST_TIMEOUT_MS = 30_000;

/** The tally key of one answer: its status, and for an error its JSON code (or what is wrong with the body). */
function outcomeOf(status: number, body: string): string {
  if (status < 400) return String(status);
  try {
    const code = (JSON.parse(body) as { error?: { code?: unknown } }).error?.code;
    return typeof code === 'string' ? `${status} ${code}` : `${status} (no error code)`;
  } catch {
    return `${status} (${body.length === 0 ? 'empty body' : 'not JSON'})`;
  }
}

/**
 * One request on a keep-alive agent: its status and body. A connection failure, a timeout or an aborted response rejects,
 * with the error's code (`TIMEOUT`, `response aborted`, `ECONNRESET`…).
 */
export function requestOnce(
  agent: http.Agent,
  base: URL,
  r: { method?: 'GET' | 'POST'; path: string; headers?: Record<string, string>; body?: string },
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string> = { ...r.headers };
    if (r.body !== undefined) {
      headers['content-type'] = 'application/json';
      headers['content-length'] = String(Buffer.byteLength(r.body));
    }
    const req = http.request({ host: base.hostname, port: base.port, method: r.method ?? 'GET', path: r.path, headers, agent, timeout: REQUEST_TIMEOUT_MS }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', () => reject(Object.assign(new Error('response aborted'), { code: 'response aborted' })));
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('timeout'), { code: 'TIMEOUT' })));
    req.on('error', reject);
    req.end(r.body);
  });
}

export async function pacedRequests(o: PacedOptions): Promise<PacedFigures> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: o.connections });
  const base = new URL(o.baseUrl);
  const outcomes: Record<string, number> = {};
  const latencies: number[] = [];
  const timeline: Array<{ atS: number; ms: number }> = [];
  const tally = (key: string) => (outcomes[key] = (outcomes[key] ?? 0) + 1);
  let [sent, answered, dropped, pending] = [0, 0, 0, 0];
  let stopped = false;
  void o.stop?.then(() => (stopped = true));
  if (o.warmUpPath) {
    const warmUp = () =>
      new Promise<void>((resolve) => {
        const req = http.request({ host: base.hostname, port: base.port, path: o.warmUpPath, headers: o.headers?.(0), agent }, (res) => res.resume().on('end', resolve));
        req.on('error', () => resolve());
        req.end();
      });
    await Promise.all(Array.from({ length: o.connections }, warmUp));
  }
  if (o.startAt !== undefined) await new Promise((r) => setTimeout(r, Math.max(0, o.startAt! - Date.now())));
  const began = performance.now();
  const intervalMs = 1000 / o.rate;

  const send = (n: number, dueAt: number) =>
    requestOnce(agent, base, { method: o.method, path: o.path(n), headers: o.headers?.(n), body: o.body?.(n) }).then(
      ({ status, body }) => {
        answered++;
        latencies.push(performance.now() - dueAt);
        timeline.push({ atS: round((dueAt - began) / 1000), ms: round(performance.now() - dueAt) });
        tally(outcomeOf(status, body));
      },
      (err: NodeJS.ErrnoException) => void tally(`error ${err.code ?? err.message}`),
    );

  const inFlight = new Set<Promise<void>>();
  await new Promise<void>((done) => {
    const tick = setInterval(() => {
      const now = performance.now();
      const over = stopped || (o.durationMs !== undefined && now - began >= o.durationMs) || (o.amount !== undefined && sent + dropped >= o.amount);
      if (over) {
        clearInterval(tick);
        return done();
      }
      while (began + (sent + dropped) * intervalMs <= now && (o.amount === undefined || sent + dropped < o.amount)) {
        const n = sent + dropped;
        if (o.maxPending !== undefined && pending >= o.maxPending) {
          dropped++;
          continue;
        }
        sent++;
        pending++;
        const p = send(n, began + n * intervalMs).finally(() => {
          pending--;
          inFlight.delete(p);
        });
        inFlight.add(p);
      }
    }, 2);
  });
  await Promise.all(inFlight);
  agent.destroy();
  return {
    sent,
    answered,
    outcomes,
    dropped,
    p50Ms: round(percentile(latencies, 50)),
    p99Ms: round(percentile(latencies, 99)),
    maxMs: round(latencies.length ? Math.max(...latencies) : Number.NaN),
    seconds: round((performance.now() - began) / 1000),
    windows: byWindow(timeline),
    slowest: timeline.sort((a, b) => b.ms - a.ms).slice(0, 25),
  };
}

const round = (n: number) => Math.round(n * 10) / 10;
