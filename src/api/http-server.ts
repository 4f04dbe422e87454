import http from 'node:http';
import type { Socket } from 'node:net';
import type { Express } from 'express';

/**
 * The API's HTTP server, made with request and response classes whose prototypes are the app's own (`app.request`,
 * `app.response`). Express otherwise gives each request and response its prototype as it arrives (Object.setPrototypeOf
 * in `app.handle`): every one then gets a hidden class of its own, and each property read on it, in Express and in Node's
 * HTTP code alike, takes V8's slow generic lookup. Created with the right prototype, that call changes nothing.
 */
export function createApiServer(app: Express): http.Server {
  function ApiRequest(this: http.IncomingMessage, socket: Socket) {
    http.IncomingMessage.call(this, socket);
  }
  ApiRequest.prototype = app.request;
  function ApiResponse(this: http.ServerResponse, req: http.IncomingMessage, options?: object) {
    (http.ServerResponse as unknown as (req: http.IncomingMessage, options?: object) => void).call(this, req, options);
  }
  ApiResponse.prototype = app.response;
  return http.createServer(
    {
      IncomingMessage: ApiRequest as unknown as typeof http.IncomingMessage,
      ServerResponse: ApiResponse as unknown as typeof http.ServerResponse,
    },
    app,
  );
}
