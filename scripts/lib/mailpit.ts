import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { stopChild } from './supervisor';

const ROOT = path.resolve(__dirname, '../..');

/** The Mailpit binary, built on first use by scripts/mailpit.sh (pinned, like the Temporal CLI). */
export function mailpitBinary(): string {
  return execFileSync('bash', [path.join(ROOT, 'scripts/mailpit.sh'), 'path'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
}

export interface MailpitOptions {
  smtpPort: number;
  /** The web UI and its HTTP API. */
  uiPort: number;
  /** SQLite file that keeps the mail across restarts; omit to keep it in a temporary file Mailpit deletes. */
  dbFile?: string;
  logFile: string;
  /** Messages kept; older ones are deleted as new ones arrive. */
  maxMessages?: number;
  /** Called as soon as the process exists, so a caller can stop it even if the start then fails. */
  onSpawn?: (pid: number | undefined, stop: () => Promise<void>) => void;
}

export interface RunningMailpit {
  /** What SMTP_URL would be to send through it. */
  smtpUrl: string;
  /** The web UI; its API is under /api/v1. */
  uiUrl: string;
  pid?: number;
  stop(): Promise<void>;
}

export function mailpitArgs(options: MailpitOptions): string[] {
  return [
    '--smtp',
    `127.0.0.1:${options.smtpPort}`,
    '--listen',
    `127.0.0.1:${options.uiPort}`,
    ...(options.dbFile ? ['--database', options.dbFile] : []),
    '--max',
    String(options.maxMessages ?? 5_000),
    // Nothing asks the network: no release check, no reverse DNS of the (loopback) sender.
    '--disable-version-check',
    '--smtp-disable-rdns',
    '--quiet',
  ];
}

/** Starts Mailpit and resolves once its API answers. */
export async function startMailpit(options: MailpitOptions, { timeoutMs = 30_000 } = {}): Promise<RunningMailpit> {
  const bin = mailpitBinary();
  fs.mkdirSync(path.dirname(options.logFile), { recursive: true });
  if (options.dbFile) fs.mkdirSync(path.dirname(options.dbFile), { recursive: true });
  const log = fs.openSync(options.logFile, 'a');
  // A process group of its own, like every process `npm start` supervises: a terminal's Ctrl-C reaches only the supervisor.
  const child: ChildProcess = spawn(bin, mailpitArgs(options), { stdio: ['ignore', log, log], detached: true });
  fs.closeSync(log);
  let exited = false;
  let spawnError: Error | undefined;
  child.once('exit', () => (exited = true));
  child.once('error', (err) => {
    spawnError = err;
    exited = true;
  });
  const stop = async (): Promise<void> => (exited ? undefined : stopChild(child, 10_000));
  options.onSpawn?.(child.pid, stop);
  const uiUrl = `http://127.0.0.1:${options.uiPort}`;
  try {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (spawnError) throw new Error(`could not start ${bin}: ${spawnError.message}`);
      if (exited) throw new Error(`mailpit exited during start; see ${options.logFile}`);
      if (await fetch(`${uiUrl}/readyz`).then((r) => r.ok, () => false)) break;
      if (Date.now() > deadline) throw new Error(`mailpit at ${uiUrl} not ready after ${timeoutMs} ms; see ${options.logFile}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (err) {
    if (!options.onSpawn) await stop();
    throw err;
  }
  return { smtpUrl: `smtp://127.0.0.1:${options.smtpPort}`, uiUrl, pid: child.pid, stop };
}
