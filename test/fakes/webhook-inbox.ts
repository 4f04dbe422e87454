import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { IncomingCallback } from '../../src/backend/types';
import { pollUntil } from '../simulator-helpers';

/** A receiver for a provider fake's webhooks in adapter tests: keeps each as the adapter's verifyCallback takes it. */
export interface WebhookInbox {
  url: string;
  received: IncomingCallback[];
  waitFor(predicate: (received: IncomingCallback[]) => boolean, timeoutMs?: number): Promise<IncomingCallback[]>;
  close(): Promise<void>;
}

export async function startWebhookInbox(): Promise<WebhookInbox> {
  const received: IncomingCallback[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://inbox');
      received.push({ headers: req.headers as IncomingHttpHeaders, rawBody: Buffer.concat(chunks).toString('utf8'), query: Object.fromEntries(url.searchParams) });
      res.writeHead(200).end('{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
    received,
    waitFor: (predicate, timeoutMs = 5_000) => pollUntil(() => received, predicate, { timeoutMs, what: 'webhooks' }),
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
