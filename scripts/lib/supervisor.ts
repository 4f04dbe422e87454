import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';

/**
 * What `npm start` runs, and how it stops. Every process it starts lives in a process group of its own, so a terminal's
 * Ctrl-C (sent to the whole foreground group) reaches only this supervisor, which then stops them in the reverse order of
 * their start and exits when the last one is gone. Any way out — a signal, a failed start, an unexpected exception —
 * goes through the same stop. The pids are recorded in a file, so processes a killed supervisor left behind are found
 * and stopped by the next start instead of holding its ports.
 */
export interface Supervised {
  name: string;
  pid?: number;
  stop(): Promise<void>;
}

interface Recorded {
  name: string;
  pid: number;
  cmdline: string;
}

export class Supervisor {
  private readonly running: Supervised[] = [];
  private stopping?: Promise<never>;

  constructor(
    private readonly pidFile: string,
    private readonly say: (line: string) => void,
  ) {}

  /** Signals and crashes all end in stopAll; a second Ctrl-C while stopping is ignored (each stop has its own deadline). */
  install(): void {
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(signal, () => void this.stopAll(0));
    process.on('uncaughtException', (err) => {
      this.say(`\nunexpected error: ${err instanceof Error ? err.message : String(err)}`);
      void this.stopAll(1);
    });
    process.on('unhandledRejection', (err) => {
      this.say(`\nunexpected error: ${err instanceof Error ? err.message : String(err)}`);
      void this.stopAll(1);
    });
  }

  get isStopping(): boolean {
    return this.stopping !== undefined;
  }

  add(process: Supervised): void {
    this.running.push(process);
    this.record();
  }

  stopAll(code: number): Promise<never> {
    this.stopping ??= (async () => {
      this.say('\nstopping…');
      for (const supervised of [...this.running].reverse()) {
        await supervised.stop().catch((err: unknown) => this.say(`  ${supervised.name}: ${err instanceof Error ? err.message : String(err)}`));
        this.running.splice(this.running.indexOf(supervised), 1);
        this.record();
        this.say(`  ${supervised.name} stopped`);
      }
      fs.rmSync(this.pidFile, { force: true });
      process.exit(code);
    })();
    return this.stopping;
  }

  /** Stops what a previous supervisor recorded and left running (it was killed before it could stop them). */
  async stopLeftovers(): Promise<void> {
    let recorded: Recorded[];
    try {
      recorded = JSON.parse(fs.readFileSync(this.pidFile, 'utf8')) as Recorded[];
    } catch {
      return;
    }
    const alive = recorded.filter((r) => cmdlineOf(r.pid) === r.cmdline);
    if (alive.length > 0) {
      this.say(`• stopping what a previous start left running: ${alive.map((r) => `${r.name} (pid ${r.pid})`).join(', ')}`);
      for (const { pid } of alive.reverse()) await stopPid(pid);
    }
    fs.rmSync(this.pidFile, { force: true });
  }

  private record(): void {
    const recorded: Recorded[] = [];
    for (const { name, pid } of this.running) {
      const cmdline = pid === undefined ? undefined : cmdlineOf(pid);
      if (pid !== undefined && cmdline !== undefined) recorded.push({ name, pid, cmdline });
    }
    fs.writeFileSync(this.pidFile, JSON.stringify(recorded));
  }
}

/** The process's command line as the kernel has it (Linux); undefined when it is gone or unknowable. */
function cmdlineOf(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return undefined;
  }
}

async function stopPid(pid: number): Promise<void> {
  const alive = () => cmdlineOf(pid) !== undefined && !fs.readFileSync(`/proc/${pid}/stat`, 'utf8').includes(') Z ');
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + 15_000;
  while (alive() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (alive()) process.kill(pid, 'SIGKILL');
}

/**
 * A service process of the repository, in a process group of its own, TypeScript through tsx's loader in the same node
 * process (tsx's own CLI would add a parent that relays signals and kills a child that is slow to acknowledge one).
 */
export function spawnService(entry: string, { cwd, env, logFile }: { cwd: string; env: Record<string, string>; logFile: string }): ChildProcess {
  const log = fs.openSync(logFile, 'a');
  const child = spawn(process.execPath, ['--import', 'tsx', entry], { cwd, env, stdio: ['ignore', log, log], detached: true });
  fs.closeSync(log);
  return child;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
export async function stopChild(child: ChildProcess, graceMs = 15_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited;
  clearTimeout(timer);
}
