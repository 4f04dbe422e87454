import fs from 'node:fs';
import net from 'node:net';

/**
 * A TCP port that was free a moment ago on 127.0.0.1, below the kernel's ephemeral range. A port the kernel picks for
 * `listen(0)` comes from that range, which is where every outgoing connection takes its local port too: a server told
 * to listen there later (a service restarted on its port, say) could find a client's connection holding it, and fail
 * with EADDRINUSE. Ports handed out by this process are not handed out again.
 */
export async function freePort(): Promise<number> {
  const ceiling = ephemeralRangeStart() - 1;
  for (let tries = 0; ceiling - LOWEST_PORT >= 1_000 && tries < 50; tries++) {
    const port = LOWEST_PORT + Math.floor(Math.random() * (ceiling - LOWEST_PORT + 1));
    if (handedOut.has(port) || !(await isPortFree(port))) continue;
    handedOut.add(port);
    return port;
  }
  return kernelPickedPort();
}

/** Below it, ports are often services' own (databases, brokers, their defaults). */
const LOWEST_PORT = 10_000;
const handedOut = new Set<number>();

/** The first port of the kernel's ephemeral range (Linux: /proc; elsewhere the IANA range's start or lower is assumed). */
function ephemeralRangeStart(): number {
  try {
    const start = Number(fs.readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/)[0]);
    if (Number.isInteger(start) && start > 0) return start;
  } catch {
    // Not Linux.
  }
  return 32_768;
}

function kernelPickedPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export async function isPortFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}
