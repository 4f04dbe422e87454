import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { BackendCallback } from '../src/backend/types';
import { verifyWebhook } from '../src/lib/webhook-signature';

/** Helpers for tests that drive the simulator over real HTTP: a callback receiver and deadline polling. */

/** Polls `read` until `done` holds for its result, or fails with the last value once the deadline passes. */
export async function pollUntil<T>(
  read: () => Promise<T> | T,
  done: (value: T) => boolean,
  { timeoutMs = 5_000, intervalMs = 10, what = 'condition' } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await read();
    if (done(value)) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}; last: ${JSON.stringify(value)}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export interface ReceivedCallback {
  headers: IncomingHttpHeaders;
  raw: string;
  body: BackendCallback;
  /** Whether the signature checked out against the receiver's secret. */
  verified: boolean;
}

export interface CallbackReceiver {
  url: string;
  /** Callbacks answered 2xx, in arrival order. */
  received: ReceivedCallback[];
  /** Requests refused on purpose so far (see failNext). */
  refused: number;
  /** The next `n` deliveries are answered 503. */
  failNext(n: number): void;
  waitFor(predicate: (received: ReceivedCallback[]) => boolean, timeoutMs?: number): Promise<ReceivedCallback[]>;
  close(): Promise<void>;
}

/** A real HTTP server on port 0 that records and verifies signed callbacks. */
export async function startCallbackReceiver(secret: string): Promise<CallbackReceiver> {
  let toRefuse = 0;
  const listeners = new Set<() => void>();
  const receiver = {
    received: [] as ReceivedCallback[],
    refused: 0,
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      if (toRefuse > 0) {
        toRefuse--;
        receiver.refused++;
        res.writeHead(503).end();
        return;
      }
      const raw = Buffer.concat(chunks).toString('utf8');
      let verified = true;
      try {
        verifyWebhook(secret, req.headers, raw);
      } catch {
        verified = false;
      }
      receiver.received.push({ headers: req.headers, raw, body: JSON.parse(raw) as BackendCallback, verified });
      res.writeHead(204).end();
      for (const listener of listeners) listener();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;

  return Object.assign(receiver, {
    url: `http://127.0.0.1:${port}/callbacks`,
    failNext(n: number) {
      toRefuse = n;
    },
    waitFor(predicate: (received: ReceivedCallback[]) => boolean, timeoutMs = 5_000) {
      return new Promise<ReceivedCallback[]>((resolve, reject) => {
        const check = () => {
          if (!predicate(receiver.received)) return;
          cleanup();
          resolve(receiver.received);
        };
        const timer = setTimeout(() => {
          cleanup();
          reject(new Error(`callbacks not received in ${timeoutMs}ms; got ${receiver.received.map((r) => r.body.type).join(', ') || 'none'}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          listeners.delete(check);
        };
        listeners.add(check);
        check();
      });
    },
    close() {
      return new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  });
}
