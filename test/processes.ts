import { TEST_PAYLOAD_KEYS } from './payload-keys';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { serviceNodeArgs, serviceNodeOptions } from '../scripts/lib/node-options';

/**
 * Real child processes for tests that kill things: a worker that dies mid-step, an API that restarts. Each process runs
 * node directly (TypeScript through tsx's loader), so its pid is the process itself and a signal reaches it, not a
 * wrapper. Output goes to test/artifacts/<name>.log; any process still alive when the test process exits is killed.
 */
const ROOT = path.resolve(__dirname, '..');
const ARTIFACTS = path.join(ROOT, 'test', 'artifacts');
const living = new Set<ChildProcess>();

process.once('exit', () => {
  for (const child of living) child.kill('SIGKILL');
});

export interface ProcessExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface SpawnedProcess {
  name: string;
  pid: number;
  logFile: string;
  /** Resolves when the process has exited, however it ended. */
  exited: Promise<ProcessExit>;
  /** Output so far (stdout and stderr, interleaved). */
  output(): string;
  /** Resolves with the matching text once the output matches; rejects if the process exits first or the deadline passes. */
  waitForOutput(pattern: RegExp, timeoutMs?: number): Promise<string>;
  kill(signal?: NodeJS.Signals): void;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when it has exited. */
  stop(graceMs?: number): Promise<ProcessExit>;
}

export interface SpawnOptions {
  /** Names the log file and error messages. */
  name: string;
  /** A TypeScript or JavaScript entry point, relative to the repository root. */
  script: string;
  args?: string[];
  /** The child's whole environment beyond PATH and HOME: nothing else leaks in from the test process. */
  env: Record<string, string>;
  /** The checkout the script is in and the child runs in; the repository by default (another: an older version's code). */
  root?: string;
  /** Runs the child at this niceness (`nice -n`; every thread it starts inherits it): a benchmark's load generator, say. */
  niceness?: number;
}

export function spawnTsProcess({ name, script, args = [], env, root = ROOT, niceness }: SpawnOptions): SpawnedProcess {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  const logFile = path.join(ARTIFACTS, `${name}.log`);
  const log = fs.createWriteStream(logFile, { flags: 'w' });
  const command = [process.execPath, ...serviceNodeArgs(path.join(root, script)), ...args];
  // `nice` execs the command: the pid is still the node process's own.
  if (niceness !== undefined) command.unshift('nice', '-n', String(niceness));
  const child = spawn(command[0], command.slice(1), {
    cwd: root,
    // The service's Node flags, as `npm start` and the image give them (scripts/lib/node-options.ts).
    // No fixed port unless the test asks for one: the workers' metrics endpoint otherwise takes 9464.
    env: {
      PATH: process.env.PATH ?? '',
      HOME: process.env.HOME ?? '',
      METRICS_PORT: '0',
      // The run's built workflow bundle (test/global-setup.ts), for workers of this checkout's code: a production worker
      // starts only with one, and any other starts faster with it.
      ...(process.env.TEST_WORKFLOW_BUNDLE_DIR && root === ROOT ? { WORKFLOW_BUNDLE_DIR: process.env.TEST_WORKFLOW_BUNDLE_DIR } : {}),
      // The tests' payload key, which the run's stacks seal with, unless the test gives one (or, outside development
      // and test, must give one: the fail-closed tests start processes without).
      ...(env.NODE_ENV === undefined || env.NODE_ENV === 'test' || env.NODE_ENV === 'development' ? { PAYLOAD_KEYS: TEST_PAYLOAD_KEYS } : {}),
      ...env,
      NODE_OPTIONS: serviceNodeOptions(env.NODE_OPTIONS),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid === undefined) throw new Error(`${name}: could not spawn ${script}`);
  living.add(child);
  let output = '';
  const listeners = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    output += chunk.toString('utf8');
    log.write(chunk);
    for (const listener of listeners) listener();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  let hasExited = false;
  const exited = new Promise<ProcessExit>((resolve) => {
    child.once('exit', (code, signal) => {
      hasExited = true;
      living.delete(child);
      log.end();
      for (const listener of listeners) listener();
      resolve({ code, signal });
    });
  });

  const spawned: SpawnedProcess = {
    name,
    pid: child.pid,
    logFile,
    exited,
    output: () => output,
    waitForOutput(pattern, timeoutMs = 60_000) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => finish(new Error(`${name}: no output matching ${pattern} within ${timeoutMs} ms; see ${logFile}`)), timeoutMs);
        const check = () => {
          const match = pattern.exec(output);
          if (match) finish(undefined, match[0]);
          else if (hasExited) finish(new Error(`${name} exited before printing ${pattern}; see ${logFile}\n${output.slice(-2000)}`));
        };
        const finish = (err?: Error, text?: string) => {
          clearTimeout(timer);
          listeners.delete(check);
          if (err) reject(err);
          else resolve(text!);
        };
        listeners.add(check);
        check();
      });
    },
    kill(signal = 'SIGTERM') {
      if (!hasExited) child.kill(signal);
    },
    async stop(graceMs = 10_000) {
      spawned.kill('SIGTERM');
      const timer = setTimeout(() => spawned.kill('SIGKILL'), graceMs);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
  return spawned;
}

/** `src/worker.ts` as its own process (as `npm run worker` runs it), configured only by `env`. */
export function spawnWorker(env: Record<string, string>, name = 'worker'): SpawnedProcess {
  return spawnTsProcess({ name, script: 'src/worker.ts', env });
}

/**
 * GPU dispatchers in processes of their own (as `WORKER_ROLE=gpu npm run worker` runs them), on a stack's settings
 * (`env` is read at each start: the stack is made in a beforeAll). `start` resolves once one polls; `stopAll` stops
 * every one started so far.
 */
export function dispatcherProcesses(env: () => Record<string, string>) {
  const started: SpawnedProcess[] = [];
  return {
    async start(name: string): Promise<SpawnedProcess> {
      const dispatcher = spawnWorker({ ...env(), WORKER_ROLE: 'gpu', LOG_LEVEL: 'info' }, name);
      started.push(dispatcher);
      await dispatcher.waitForOutput(/worker started/, 60_000);
      return dispatcher;
    },
    async stopAll(): Promise<void> {
      await Promise.all(started.splice(0).map((d) => d.stop()));
    },
  };
}
