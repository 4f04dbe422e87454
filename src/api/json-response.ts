import type { Express, Response } from 'express';

/**
 * `res.json` for every route of the app, without Express's generic `send`: the body is written as the string it is (no
 * copy into a Buffer first) and its Content-Type is set, not parsed and formatted again. A client sees the same status,
 * headers and JSON: `application/json; charset=utf-8` unless the route chose another type (kept as set; JSON is UTF-8),
 * and Content-Length. The API sets no ETag, so there is no conditional answer to give, and Node writes no body for HEAD.
 */
export function useLeanJson(app: Express): void {
  app.response.json = function json(this: Response, body: unknown) {
    const text = JSON.stringify(body) ?? '';
    if (!this.hasHeader('Content-Type')) this.setHeader('Content-Type', 'application/json; charset=utf-8');
    this.setHeader('Content-Length', Buffer.byteLength(text));
    this.end(text);
    return this;
  };
}
