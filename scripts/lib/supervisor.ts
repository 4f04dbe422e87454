import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { serviceNodeArgs } from './node-options';
import { commandLine, isLive } from './procfs';

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

/** How a process ended: its exit code, or the signal that ended it. */
export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** Resolves when the child exits, however and whenever that is (at once if it has already). */
export function exitOf(child: ChildProcess): Promise<ExitStatus> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
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

  /**
   * A started process that exits while nothing is stopping (it crashed, ran out of memory, or someone killed it) stops
   * everything, after saying which one and the last lines of its log: a stack with a part missing would go on answering
   * without doing the work (jobs kept queued with no Temporal, 503s with no Postgres), and say nothing.
   */
  watch(name: string, exited: Promise<ExitStatus>, logFile: string): void {
    void exited.then(({ code, signal }) => {
      if (this.isStopping) return;
      this.say(`\n${name} exited unexpectedly (code ${code}, signal ${signal}); last lines of its log (${logFile}):`);
      for (const line of lastLines(logFile, 15)) this.say(`  ${line}`);
      void this.stopAll(1);
    });
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
    const alive = recorded.filter((r) => commandLine(r.pid) === r.cmdline);
    if (alive.length > 0) {
      this.say(`• stopping what a previous start left running: ${alive.map((r) => `${r.name} (pid ${r.pid})`).join(', ')}`);
      for (const { pid } of alive.reverse()) await stopPid(pid);
    }
    fs.rmSync(this.pidFile, { force: true });
  }

  private record(): void {
    const recorded: Recorded[] = [];
    for (const { name, pid } of this.running) {
      const cmdline = pid === undefined ? undefined : commandLine(pid);
      if (pid !== undefined && cmdline !== undefined) recorded.push({ name, pid, cmdline });
    }
    fs.writeFileSync(this.pidFile, JSON.stringify(recorded));
  }
}

function lastLines(file: string, count: number): string[] {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-count);
  } catch {
    return ['(no log)'];
  }
}

async function stopPid(pid: number): Promise<void> {
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  const deadline = Date.now() + 15_000;
  while (isLive(pid) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
  if (isLive(pid)) process.kill(pid, 'SIGKILL');
}

/**
 * A service process of the repository, in a process group of its own, TypeScript through tsx's loader in the same node
 * process (tsx's own CLI would add a parent that relays signals and kills a child that is slow to acknowledge one).
 */
export function spawnService(entry: string, { cwd, env, logFile }: { cwd: string; env: Record<string, string>; logFile: string }): ChildProcess {
  const log = fs.openSync(logFile, 'a');
  const child = spawn(process.execPath, serviceNodeArgs(entry), { cwd, env, stdio: ['ignore', log, log], detached: true });
  fs.closeSync(log);
  return child;
}

export interface ToolStart {
  /** How errors name it. */
  name: string;
  bin: string;
  args: string[];
  logFile: string;
  /** A data file whose folder must exist. */
  dbFile?: string;
  /** Called as soon as the process exists, so a caller can stop it even if the start then fails. */
  onSpawn?: (pid: number | undefined, stop: () => Promise<void>) => void;
}

/**
 * Starts a tool's binary (the Temporal dev server, Mailpit) in a process group of its own, its output in its log, and
 * waits for `ready`, which is handed a check that throws once the process failed to spawn or exited. A start that fails
 * stops the process, unless the caller took its stop through `onSpawn`.
 */
export async function startTool(
  start: ToolStart,
  ready: (alive: () => void) => Promise<void>,
): Promise<{ pid: number | undefined; stop: () => Promise<void>; exited: Promise<ExitStatus> }> {
  fs.mkdirSync(path.dirname(start.logFile), { recursive: true });
  if (start.dbFile) fs.mkdirSync(path.dirname(start.dbFile), { recursive: true });
  const log = fs.openSync(start.logFile, 'a');
  const child: ChildProcess = spawn(start.bin, start.args, { stdio: ['ignore', log, log], detached: true });
  fs.closeSync(log);
  let exited = false;
  let spawnError: Error | undefined;
  const exit = exitOf(child);
  child.once('exit', () => (exited = true));
  child.once('error', (err) => {
    spawnError = err;
    exited = true;
  });
  // A process that never started (a spawn error) has nothing to stop, and would never report an exit.
  const stop = async (): Promise<void> => (exited ? undefined : stopChild(child, 10_000));
  start.onSpawn?.(child.pid, stop);
  try {
    await ready(() => {
      if (spawnError) throw new Error(`could not start ${start.bin}: ${spawnError.message}`);
      if (exited) throw new Error(`${start.name} exited during start; see ${start.logFile}`);
    });
  } catch (err) {
    if (!start.onSpawn) await stop();
    throw err;
  }
  return { pid: child.pid, stop, exited: exit };
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
