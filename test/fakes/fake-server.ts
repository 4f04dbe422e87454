import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * What the provider fakes share: a plain HTTP server with the simulator's failure knobs, a job clock, outcomes chosen by
 * the prompt, and webhook delivery that can lose or repeat callbacks. Each fake (replicate.ts, fal.ts, comfyui.ts,
 * veo.ts) adds the provider's own paths and shapes on top.
 */
export interface FakeKnobs {
  /** How long a job runs once started. */
  runMs: number;
  /** How long it waits before starting. */
  queueMs: number;
  /** Every webhook is dropped (never sent): polling must find the ending. */
  loseCallbacks: boolean;
  /** Every webhook is sent twice, with the same id. */
  duplicateCallbacks: boolean;
  /** The next N requests (of any kind) are answered 503. */
  fail5xxNext: number;
  /** Every answer waits this long first. */
  slowMs: number;
  /** Every connection is closed without an answer. Jobs already running keep running. */
  outage: boolean;
  /**
   * The next N POST requests (the calls that create a job) are carried out, but their answers never leave: the caller
   * times out not knowing whether the job exists, the way an answer lost on the network or a caller dying mid-call does.
   */
  loseNextAnswers: number;
}

export const DEFAULT_KNOBS: FakeKnobs = { runMs: 300, queueMs: 0, loseCallbacks: false, duplicateCallbacks: false, fail5xxNext: 0, slowMs: 0, outage: false, loseNextAnswers: 0 };

/**
 * The ending a job's prompt asks the fake for: `[fake:fail=content]`, `[fake:fail=input]`, `[fake:fail=oom]`,
 * `[fake:fail=internal]`, or `[fake:hang]` (runs until canceled); anything else succeeds.
 */
export type FakeOutcome = 'succeed' | 'content' | 'input' | 'oom' | 'internal' | 'hang';

export function outcomeOf(text: string): FakeOutcome {
  if (text.includes('[fake:hang]')) return 'hang';
  const fail = /\[fake:fail=(content|input|oom|internal)\]/.exec(text);
  return fail ? (fail[1] as FakeOutcome) : 'succeed';
}

export interface FakeRequest {
  method: string;
  path: string;
  query: URLSearchParams;
  headers: IncomingMessage['headers'];
  body: unknown;
}

export interface FakeAnswer {
  status: number;
  body?: unknown;
}

export type FakeRoute = (req: FakeRequest) => FakeAnswer | Promise<FakeAnswer> | undefined;

export interface FakeServer {
  url: string;
  knobs: FakeKnobs;
  set(knobs: Partial<FakeKnobs>): void;
  /** Requests received per `METHOD /path-pattern` the fake names, for assertions on what the adapter asked. */
  requests: FakeRequest[];
  /** Webhooks sent (each try), and those answered 2xx. */
  webhooks: { sent: number; delivered: number };
  /** Posts a webhook unless the knobs lose it; twice when they duplicate it. Retries a few times on a non-2xx answer. */
  deliver(url: string, headers: () => Record<string, string>, body: string): void;
  close(): Promise<void>;
}

export async function startFakeServer(route: FakeRoute, knobs: Partial<FakeKnobs> = {}): Promise<FakeServer> {
  const state: FakeServer['knobs'] = { ...DEFAULT_KNOBS, ...knobs };
  const requests: FakeRequest[] = [];
  const webhooks = { sent: 0, delivered: 0 };
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  let closing = false;

  const server: Server = createServer((req, res) => void handle(req, res));
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (state.outage) {
      req.socket.destroy();
      return;
    }
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const text = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', 'http://fake');
    let body: unknown;
    try {
      body = text ? JSON.parse(text) : undefined;
    } catch {
      body = text;
    }
    const request: FakeRequest = { method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, headers: req.headers, body };
    requests.push(request);
    if (state.slowMs > 0) await new Promise((r) => setTimeout(r, state.slowMs));
    if (state.fail5xxNext > 0) {
      state.fail5xxNext -= 1;
      return send(res, { status: 503, body: { detail: 'the fake is unavailable (knob)' } });
    }
    const lose = request.method === 'POST' && state.loseNextAnswers > 0;
    if (lose) state.loseNextAnswers -= 1;
    try {
      const answer = (await route(request)) ?? { status: 404, body: { detail: 'Not found.' } };
      // Done, and never answered: the connection stays open until the caller gives up (or the fake closes).
      if (lose) return;
      send(res, answer);
    } catch (err) {
      send(res, { status: 500, body: { detail: (err as Error).message } });
    }
  }

  function send(res: ServerResponse, { status, body }: FakeAnswer): void {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(body === undefined ? '' : JSON.stringify(body));
  }

  function later(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  }

  function deliver(url: string, headers: () => Record<string, string>, body: string): void {
    if (state.loseCallbacks || closing) return;
    const post = (attempt: number) => {
      if (closing) return;
      webhooks.sent += 1;
      fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers() }, body })
        .then((res) => {
          if (res.ok) webhooks.delivered += 1;
          else if (attempt < 5) later(200 * attempt, () => post(attempt + 1));
        })
        .catch(() => {
          if (attempt < 5) later(200 * attempt, () => post(attempt + 1));
        });
    };
    post(1);
    if (state.duplicateCallbacks) later(20, () => post(1));
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    knobs: state,
    set: (next) => Object.assign(state, next),
    requests,
    webhooks,
    deliver,
    async close() {
      closing = true;
      for (const timer of timers) clearTimeout(timer);
      for (const socket of sockets) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** A job's clock: queued, then running after queueMs, then ended after runMs (unless it hangs or is ended first). */
export class FakeJobs<J extends { id: string; outcome: FakeOutcome; state: 'queued' | 'running' | 'ended' }> {
  readonly jobs = new Map<string, J>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(
    private readonly knobs: FakeKnobs,
    private readonly on: { start(job: J): void; end(job: J): void },
  ) {}

  add(job: J): J {
    this.jobs.set(job.id, job);
    this.after(this.knobs.queueMs, () => {
      if (job.state !== 'queued') return;
      job.state = 'running';
      this.on.start(job);
      if (job.outcome === 'hang') return;
      this.after(this.knobs.runMs, () => {
        if (job.state !== 'running') return;
        job.state = 'ended';
        this.on.end(job);
      });
    });
    return job;
  }

  /** Jobs still queued or running: what a lost or abandoned job of ours would leave behind. */
  live(): J[] {
    return [...this.jobs.values()].filter((j) => j.state !== 'ended');
  }

  stop(): void {
    for (const timer of this.timers) clearTimeout(timer);
  }

  private after(ms: number, fn: () => void): void {
    const timer = setTimeout(() => {
      this.timers.delete(timer);
      fn();
    }, ms);
    this.timers.add(timer);
  }
}
