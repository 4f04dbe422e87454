import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { registry } from './metrics';

/**
 * A bare /metrics endpoint for processes that have no HTTP server of their own (the workers). `more`: metrics in the
 * Prometheus text format served after ours (the Temporal SDK's); when they cannot be read, ours are served alone.
 */
export function startMetricsServer(
  port: number,
  { host = '0.0.0.0', more }: { host?: string; more?: () => Promise<string> } = {},
): Promise<{ port: number; close(): Promise<void> }> {
  const server = http.createServer((req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    Promise.all([registry.metrics(), more?.().catch(() => '') ?? ''])
      .then(([ours, theirs]) => `${ours}${theirs && !ours.endsWith('\n') ? '\n' : ''}${theirs}`)
      .then(
      (body) => res.writeHead(200, { 'content-type': registry.contentType }).end(body),
      (err: unknown) => res.writeHead(500).end(String(err)),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () =>
      resolve({
        port: (server.address() as AddressInfo).port,
        close: () => new Promise<void>((done) => server.close(() => done())),
      }),
    );
  });
}
