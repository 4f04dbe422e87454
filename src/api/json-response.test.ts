import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import express from 'express';
import { useLeanJson } from './json-response';

describe('useLeanJson', () => {
  let server: Server;
  let base: string;

  beforeAll(async () => {
    const app = express();
    useLeanJson(app);
    app.get('/created', (_req, res) => void res.status(201).location('/things/1').json({ name: 'café ☕', n: [1, 2] }));
    app.get('/problem', (_req, res) => void res.status(422).type('application/problem+json').json({ title: 'nope' }));
    app.get('/null', (_req, res) => void res.json(null));
    server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, '127.0.0.1', () => resolve(s));
    });
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });

  afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

  it('writes the status, headers set before it, a UTF-8 JSON type and the byte length of the body', async () => {
    const res = await fetch(`${base}/created`);
    const text = await res.text();
    expect(res.status).toBe(201);
    expect(res.headers.get('location')).toBe('/things/1');
    expect(res.headers.get('content-type')).toBe('application/json; charset=utf-8');
    expect(Number(res.headers.get('content-length'))).toBe(Buffer.byteLength(text));
    expect(Buffer.byteLength(text)).toBeGreaterThan(text.length); // multi-byte characters are counted as bytes
    expect(JSON.parse(text)).toEqual({ name: 'café ☕', n: [1, 2] });
  });

  it('keeps a content type the route chose', async () => {
    const res = await fetch(`${base}/problem`);
    expect(res.status).toBe(422);
    expect(res.headers.get('content-type')).toBe('application/problem+json');
    expect(await res.json()).toEqual({ title: 'nope' });
  });

  it('writes JSON null, and no body for HEAD', async () => {
    expect(await (await fetch(`${base}/null`)).text()).toBe('null');
    const head = await fetch(`${base}/created`, { method: 'HEAD' });
    expect(head.status).toBe(201);
    expect(await head.text()).toBe('');
  });
});
