import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

/** Helpers for tests of notifications over real HTTP: a scriptable webhook receiver and an SSE client. */

/** Resolves once `check` holds, re-checking whenever `subscribe`'s listener fires; rejects with `describe()` at the deadline. */
function waitUntil(subscribe: (listener: () => void) => () => void, check: () => boolean, timeoutMs: number, describe: () => string): Promise<void> {
  return new Promise((resolve, reject) => {
    let unsubscribe = () => {};
    const timer = setTimeout(() => {
      unsubscribe();
      reject(new Error(`timed out after ${timeoutMs} ms: ${describe()}`));
    }, timeoutMs);
    const onChange = () => {
      if (!check()) return;
      clearTimeout(timer);
      unsubscribe();
      resolve();
    };
    unsubscribe = subscribe(onChange);
    onChange();
  });
}

export interface ReceivedWebhook {
  headers: IncomingHttpHeaders;
  raw: string;
  /** What the receiver answered. */
  status: number;
}

export interface WebhookAnswer {
  status: number;
  /** Hold the answer this long (a slow receiver). */
  delayMs?: number;
  headers?: Record<string, string>;
}

export interface WebhookReceiver {
  url: string;
  /** Every request, in arrival order, whatever it was answered. */
  received: ReceivedWebhook[];
  waitFor(predicate: (received: ReceivedWebhook[]) => boolean, timeoutMs?: number): Promise<ReceivedWebhook[]>;
  close(): Promise<void>;
}

/** A real HTTP server on 127.0.0.1 that records webhook requests and answers each as `answer(n)` says (n counts from 1). */
export async function startWebhookReceiver(answer: (n: number, raw: string) => WebhookAnswer = () => ({ status: 204 })): Promise<WebhookReceiver> {
  const received: ReceivedWebhook[] = [];
  const listeners = new Set<() => void>();
  const pending = new Set<NodeJS.Timeout>();
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      const raw = Buffer.concat(chunks).toString('utf8');
      const { status, delayMs = 0, headers = {} } = answer(received.length + 1, raw);
      received.push({ headers: req.headers, raw, status });
      for (const listener of listeners) listener();
      const timer = setTimeout(() => {
        pending.delete(timer);
        if (!res.destroyed) res.writeHead(status, headers).end(status === 204 ? undefined : `answered ${status}`);
      }, delayMs);
      pending.add(timer);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/webhooks`,
    received,
    async waitFor(predicate, timeoutMs = 20_000) {
      await waitUntil(
        (l) => (listeners.add(l), () => listeners.delete(l)),
        () => predicate(received),
        timeoutMs,
        () => `webhooks received: ${received.length}`,
      );
      return received;
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const timer of pending) clearTimeout(timer);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export interface ServerSentEvent {
  id: string | undefined;
  event: string;
  data: any;
}

export interface EventStreamClient {
  status: number;
  headers: Headers;
  events: ServerSentEvent[];
  /** Comment lines (keep-alives) seen so far. */
  comments: number;
  /** The server ended the stream (not closed by `close()`). */
  ended: boolean;
  waitFor(predicate: (events: ServerSentEvent[], comments: number) => boolean, timeoutMs?: number): Promise<ServerSentEvent[]>;
  close(): void;
}

/** Opens an SSE stream with fetch and parses it as it arrives (id, event, data as JSON; comments counted). */
export async function openEventStream(url: string, apiKey: string, { lastEventId }: { lastEventId?: string } = {}): Promise<EventStreamClient> {
  const abort = new AbortController();
  const headers: Record<string, string> = { authorization: `Bearer ${apiKey}`, accept: 'text/event-stream' };
  if (lastEventId !== undefined) headers['last-event-id'] = lastEventId;
  const res = await fetch(url, { headers, signal: abort.signal });
  const listeners = new Set<() => void>();
  const client: EventStreamClient = {
    status: res.status,
    headers: res.headers,
    events: [],
    comments: 0,
    ended: false,
    async waitFor(predicate, timeoutMs = 20_000) {
      await waitUntil(
        (l) => (listeners.add(l), () => listeners.delete(l)),
        () => predicate(client.events, client.comments),
        timeoutMs,
        () => `events so far: ${client.events.map((e) => `${e.id}:${e.event}`).join(', ') || 'none'}`,
      );
      return client.events;
    },
    close: () => abort.abort(),
  };
  if (!res.ok || !res.body) return client;

  const parseBlock = (block: string) => {
    const event: ServerSentEvent = { id: undefined, event: 'message', data: undefined };
    const data: string[] = [];
    for (const line of block.split('\n')) {
      if (line.startsWith(':')) client.comments++;
      else if (line.startsWith('id: ')) event.id = line.slice(4);
      else if (line.startsWith('event: ')) event.event = line.slice(7);
      else if (line.startsWith('data: ')) data.push(line.slice(6));
    }
    if (data.length > 0) {
      event.data = JSON.parse(data.join('\n'));
      client.events.push(event);
    }
    for (const listener of listeners) listener();
  };
  void (async () => {
    const decoder = new TextDecoder();
    let buffer = '';
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let end: number;
        while ((end = buffer.indexOf('\n\n')) >= 0) {
          parseBlock(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
      client.ended = true;
      for (const listener of listeners) listener();
    } catch {
      // aborted by close()
    }
  })();
  return client;
}
