import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

/**
 * A local HTTP server of images, and of things that are not images, for the input_reference checks: each path is one
 * case. It records the requests it got, so a test can see which method the check used.
 */
export interface ImageServer {
  url: string;
  requests: Array<{ method: string; path: string; range: string | undefined }>;
  close(): Promise<void>;
}

/** The smallest valid PNG (a 1×1 transparent pixel). */
export const PNG_BYTES = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=',
  'base64',
);

export const TEN_MB = 10 * 1024 * 1024;

/** `hugeBytes`: the size /huge.png claims and /chunked.png streams (default 10 MB + 1 KiB). */
export async function startImageServer({ hugeBytes = TEN_MB + 1024 }: { hugeBytes?: number } = {}): Promise<ImageServer> {
  const requests: ImageServer['requests'] = [];
  const sockets = new Set<Socket>();
  const image = (res: ServerResponse, head: boolean, type = 'image/png') => {
    res.writeHead(200, { 'content-type': type, 'content-length': PNG_BYTES.length });
    res.end(head ? undefined : PNG_BYTES);
  };
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const head = req.method === 'HEAD';
    requests.push({ method: req.method ?? '', path, range: req.headers.range });
    switch (path) {
      case '/cat.png':
        return image(res, head);
      case '/photo.jpg':
        return image(res, head, 'image/jpeg; charset=binary');
      case '/page.html':
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        return res.end(head ? undefined : '<html><body>not an image</body></html>');
      case '/huge.png':
        // Says its size and is never read: the check stops at the headers.
        res.writeHead(200, { 'content-type': 'image/png', 'content-length': hugeBytes });
        if (head) return res.end();
        return res.destroy();
      case '/chunked.png': {
        // No length: the check has to read it, and must stop past the limit.
        res.writeHead(200, { 'content-type': 'image/png', 'transfer-encoding': 'chunked' });
        if (head) return res.end();
        const chunk = Buffer.alloc(64 * 1024);
        let sent = 0;
        const pump = () => {
          while (sent < hugeBytes) {
            sent += chunk.length;
            if (!res.write(chunk)) return res.once('drain', pump);
          }
          res.end();
        };
        return pump();
      }
      case '/no-head.png':
        // HEAD refused, as servers and GET-signed URLs do; a ranged GET answers the first byte and the whole size.
        if (head) {
          res.writeHead(405, { allow: 'GET' });
          return res.end();
        }
        if (req.headers.range === 'bytes=0-0') {
          res.writeHead(206, { 'content-type': 'image/png', 'content-range': `bytes 0-0/${PNG_BYTES.length}`, 'content-length': 1 });
          return res.end(PNG_BYTES.subarray(0, 1));
        }
        return image(res, false);
      case '/redirect-to-cat':
        res.writeHead(302, { location: '/cat.png' });
        return res.end();
      case '/redirect-to-private':
        res.writeHead(302, { location: 'http://10.0.0.1/cat.png' });
        return res.end();
      case '/hang.png':
        return; // never answers
      default:
        res.writeHead(404, { 'content-type': 'text/plain' });
        return res.end('not found');
    }
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}
