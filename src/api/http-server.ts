import http from 'node:http';
import type { Socket } from 'node:net';
import type { Express } from 'express';

export interface HttpLimits {
  /** A client must have sent its headers within this (Node answers 408 and closes), and its whole request within requestTimeoutMs. */
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  /** Open connections beyond this are answered 503 and closed. */
  maxConnections: number;
}

/** Node checks the header and request deadlines only this often (30 s by default): a slow client lives at most this much longer. */
const DEADLINE_CHECK_MS = 1_000;

const refusal = JSON.stringify({ error: { code: 'too_many_connections', message: 'the server has too many open connections; retry shortly' } });
const REFUSED_CONNECTION =
  'HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\nRetry-After: 1\r\nConnection: close\r\n' +
  `Content-Length: ${Buffer.byteLength(refusal)}\r\n\r\n${refusal}`;

/** Looks at a request before the app: true when it answered it (src/api/early-refusals.ts). */
export type FirstLook = (req: http.IncomingMessage, res: http.ServerResponse) => boolean;

/**
 * The API's HTTP server, made with request and response classes whose prototypes are the app's own (`app.request`,
 * `app.response`). Express otherwise gives each request and response its prototype as it arrives (Object.setPrototypeOf
 * in `app.handle`): every one then gets a hidden class of its own, and each property read on it, in Express and in Node's
 * HTTP code alike, takes V8's slow generic lookup. Created with the right prototype, that call changes nothing.
 *
 * Bounded against slow and numerous clients: header and request deadlines (a response, such as an event stream, is not
 * bounded: the request deadline ends once the request is read), and a connection cap whose excess is answered 503.
 * `firstLook` answers what needs no routing (a key-guesser's refusals) before the app.
 */
export function createApiServer(app: Express, limits: HttpLimits, firstLook?: FirstLook): http.Server {
  function ApiRequest(this: http.IncomingMessage, socket: Socket) {
    http.IncomingMessage.call(this, socket);
  }
  ApiRequest.prototype = app.request;
  function ApiResponse(this: http.ServerResponse, req: http.IncomingMessage, options?: object) {
    (http.ServerResponse as unknown as (req: http.IncomingMessage, options?: object) => void).call(this, req, options);
  }
  ApiResponse.prototype = app.response;
  const refused = new WeakSet<Socket>();
  const server = http.createServer(
    {
      IncomingMessage: ApiRequest as unknown as typeof http.IncomingMessage,
      ServerResponse: ApiResponse as unknown as typeof http.ServerResponse,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      connectionsCheckingInterval: Math.min(DEADLINE_CHECK_MS, limits.headersTimeoutMs),
    },
    // A request that reaches a refused connection before its close is not served.
    (req, res) => {
      if (refused.has(req.socket)) req.socket.destroy();
      else if (!firstLook?.(req, res)) app(req, res);
    },
  );
  let open = 0;
  // Before Node's own listener, so a refused connection is answered before anything is read from it.
  server.prependListener('connection', (socket: Socket) => {
    if (open >= limits.maxConnections) {
      refused.add(socket);
      socket.end(REFUSED_CONNECTION, () => socket.destroy());
      return;
    }
    open++;
    socket.once('close', () => open--);
  });
  return server;
}
