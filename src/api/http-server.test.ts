import type { AddressInfo } from 'node:net';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import express from 'express';
import { createApiServer } from './http-server';

describe('createApiServer', () => {
  const app = express();
  app.get('/echo', (req, res) => void res.set('X-Seen', String(req.get('x-ping'))).json({ q: req.query.q, path: req.path }));
  let server: Server;
  let base: string;
  const arrivals: Array<{ request: boolean; response: boolean }> = [];

  beforeAll(async () => {
    server = createApiServer(app, { headersTimeoutMs: 10_000, requestTimeoutMs: 30_000, maxConnections: 100 });
    // Before the app's own listener: what each request and response is made as, before Express touches them.
    server.prependListener('request', (req: IncomingMessage, res: ServerResponse) => {
      arrivals.push({ request: Object.getPrototypeOf(req) === app.request, response: Object.getPrototypeOf(res) === app.response });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it("makes every request and response with the app's prototypes, and the app serves them as usual", async () => {
    for (const q of ['one', 'two']) {
      const res = await fetch(`${base}/echo?q=${q}`, { headers: { 'x-ping': q } });
      expect(res.status).toBe(200);
      expect(res.headers.get('x-seen')).toBe(q);
      expect(await res.json()).toEqual({ q, path: '/echo' });
    }
    const missing = await fetch(`${base}/nothing-here`);
    expect(missing.status).toBe(404);
    expect(arrivals).toEqual(Array.from({ length: 3 }, () => ({ request: true, response: true })));
  });
});
