import net from 'node:net';
import { startApi } from '../src/api/main';
import type { Config } from '../src/config';
import { createLogger, type Logger } from '../src/lib/logger';
import { testEnv, type Stack } from './harness';

/** Helpers for tests of hostile clients: an extra API on a stack with limits of its own, metrics, raw sockets. */

export type ApiProcess = Awaited<ReturnType<typeof startApi>>;

/** Another API instance on the stack's database and Temporal, configured as the stack's but for `overrides`. */
export async function startApiWith(
  stack: Stack,
  overrides: { api?: Partial<Config['api']>; notifications?: Partial<Config['notifications']>; database?: Partial<Config['database']>; logger?: Logger },
): Promise<ApiProcess> {
  const { config } = stack;
  return startApi({
    config: {
      ...config,
      api: { ...config.api, port: 0, ...overrides.api },
      notifications: { ...config.notifications, ...overrides.notifications },
      database: { ...config.database, ...overrides.database },
    },
    databaseUrl: testEnv().databaseUrl,
    logger: overrides.logger ?? createLogger('hostile-api', 'error'),
    adminApiKey: stack.adminApiKey,
  });
}

/** A Prometheus sample of this process (every in-process API shares the registry): the sum over series matching `labels`. */
export async function metric(apiUrl: string, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(`${apiUrl}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)(\{[^}]*\})? (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const series = match[2] ?? '';
    if (Object.entries(labels).every(([k, v]) => series.includes(`${k}="${v}"`))) sum += Number(match[3]);
  }
  return sum;
}

/** A raw TCP connection to an API, with what it received and whether the server closed it. */
export function rawSocket(apiUrl: string) {
  const { hostname, port } = new URL(apiUrl);
  const socket = net.connect({ host: hostname, port: Number(port) });
  const state = { received: '', closed: false, connected: new Promise<void>((resolve) => socket.once('connect', () => resolve())) };
  socket.on('data', (chunk: Buffer) => (state.received += chunk.toString('utf8')));
  socket.on('error', () => undefined);
  socket.on('close', () => (state.closed = true));
  return Object.assign(state, { socket });
}
