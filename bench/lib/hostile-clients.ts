import http from 'node:http';
import net from 'node:net';

/** Clients no well-behaved user runs: many event streams of one user, and sockets that send their headers slowly. */

export interface StreamFlood {
  /** `<status> <error code>` (or `200`) → count; connection failures as `error <code>`. */
  outcomes: Record<string, number>;
  /** Streams answered 200. */
  accepted: number;
  /** Accepted streams the server ended (or cut) before the flood closed them. */
  endedByServer: number;
  /** Event blocks (`id:`/`event:`/`data:`) and bytes received over all streams. */
  events: number;
  bytes: number;
  /** How many events of each type (e.g. a notice that the resume point is too old). */
  eventTypes: Record<string, number>;
}

/**
 * Opens `count` event streams of one user, `perSecond` at a time, each on its own connection and resuming after
 * Last-Event-ID `lastEventId`; reads (and discards) what they send until `close()`.
 */
export function floodStreams({ baseUrl, apiKey, count, perSecond, lastEventId }: { baseUrl: string; apiKey: string; count: number; perSecond: number; lastEventId: string }) {
  const figures: StreamFlood = { outcomes: {}, accepted: 0, endedByServer: 0, events: 0, bytes: 0, eventTypes: {} };
  const tally = (key: string) => (figures.outcomes[key] = (figures.outcomes[key] ?? 0) + 1);
  const requests = new Set<http.ClientRequest>();
  let closing = false;
  const open = () => {
    const req = http.get(
      `${baseUrl}/v1/events`,
      { agent: false, headers: { authorization: `Bearer ${apiKey}`, accept: 'text/event-stream', 'last-event-id': lastEventId } },
      (res) => {
        if (res.statusCode !== 200) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            let code = '(no error code)';
            try {
              code = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error: { code: string } }).error.code ?? code;
            } catch {
              // counted as having no code
            }
            tally(`${res.statusCode} ${code}`);
            requests.delete(req);
          });
          return;
        }
        tally('200');
        figures.accepted++;
        let tail = '';
        res.on('data', (chunk: Buffer) => {
          figures.bytes += chunk.length;
          const text = tail + chunk.toString('utf8');
          const blocks = text.split('\n\n');
          tail = blocks.pop() ?? '';
          for (const block of blocks) {
            const type = /^event: (.+)$/m.exec(block)?.[1];
            if (!type) continue;
            figures.events++;
            figures.eventTypes[type] = (figures.eventTypes[type] ?? 0) + 1;
          }
        });
        res.on('close', () => {
          if (!closing) figures.endedByServer++;
          requests.delete(req);
        });
      },
    );
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (!closing) tally(`error ${err.code ?? err.message}`);
      requests.delete(req);
    });
    requests.add(req);
  };
  let opened = 0;
  const ticker = setInterval(() => {
    for (let i = 0; i < perSecond / 20 && opened < count; i++, opened++) open();
    if (opened >= count) clearInterval(ticker);
  }, 50);
  return {
    figures,
    close() {
      closing = true;
      clearInterval(ticker);
      for (const req of requests) req.destroy();
    },
  };
}

export interface SlowSocketFigures {
  opened: number;
  /** What the server sent before closing, by status line (`408`), or `nothing`. */
  answers: Record<string, number>;
  /** Sockets still open `checkAfterMs` after they connected. */
  openAfterCheck: number;
  /** When the server closed them, ms after they connected: the first and the last. */
  firstClosedMs: number | null;
  lastClosedMs: number | null;
  connectErrors: number;
}

/**
 * `count` sockets that start a request and then send one more header line every `lineEveryMs`, never finishing the
 * headers. Resolves `checkAfterMs` after the last one connected with how many the server still held open then.
 */
export async function slowHeaderSockets({ host, port, count, lineEveryMs, checkAfterMs }: { host: string; port: number; count: number; lineEveryMs: number; checkAfterMs: number }) {
  const sockets: Array<{ socket: net.Socket; connectedAt?: number; closedAt?: number; answer?: string }> = [];
  let connectErrors = 0;
  await Promise.all(
    Array.from(
      { length: count },
      (_, i) =>
        new Promise<void>((resolve) => {
          const entry: (typeof sockets)[number] = { socket: net.connect({ host, port }) };
          sockets.push(entry);
          const { socket } = entry;
          let timer: NodeJS.Timeout | undefined;
          socket.on('connect', () => {
            entry.connectedAt = performance.now();
            socket.write(`GET /v1/generations HTTP/1.1\r\nHost: ${host}\r\n`);
            let line = 0;
            timer = setInterval(() => socket.write(`X-Slow-${i}-${line++}: a\r\n`), lineEveryMs);
            resolve();
          });
          socket.on('data', (chunk: Buffer) => {
            entry.answer ??= /^HTTP\/1\.1 (\d{3})/.exec(chunk.toString('latin1'))?.[1] ?? 'other';
          });
          socket.on('error', () => {
            if (entry.connectedAt === undefined) connectErrors++;
          });
          socket.on('close', () => {
            clearInterval(timer);
            entry.closedAt = performance.now();
            resolve();
          });
        }),
    ),
  );
  await new Promise((r) => setTimeout(r, checkAfterMs));
  const connected = sockets.filter((s) => s.connectedAt !== undefined);
  const openAfterCheck = connected.filter((s) => s.closedAt === undefined || s.closedAt - s.connectedAt! > checkAfterMs).length;
  const closedMs = connected.filter((s) => s.closedAt !== undefined).map((s) => Math.round(s.closedAt! - s.connectedAt!));
  const answers: Record<string, number> = {};
  for (const s of connected) {
    const key = s.answer ?? 'nothing';
    answers[key] = (answers[key] ?? 0) + 1;
  }
  for (const s of sockets) s.socket.destroy();
  return {
    opened: connected.length,
    answers,
    openAfterCheck,
    firstClosedMs: closedMs.length ? Math.min(...closedMs) : null,
    lastClosedMs: closedMs.length ? Math.max(...closedMs) : null,
    connectErrors,
  } satisfies SlowSocketFigures;
}
