import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { startTool, type ExitStatus } from './supervisor';

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
  /** Resolves when it exits. */
  exited: Promise<ExitStatus>;
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
  const uiUrl = `http://127.0.0.1:${options.uiPort}`;
  const { pid, stop, exited } = await startTool(
    { name: 'mailpit', bin: mailpitBinary(), args: mailpitArgs(options), logFile: options.logFile, dbFile: options.dbFile, onSpawn: options.onSpawn },
    async (alive) => {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        alive();
        if (await fetch(`${uiUrl}/readyz`).then((r) => r.ok, () => false)) return;
        if (Date.now() > deadline) throw new Error(`mailpit at ${uiUrl} not ready after ${timeoutMs} ms; see ${options.logFile}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
  );
  return { smtpUrl: `smtp://127.0.0.1:${options.smtpPort}`, uiUrl, pid, stop, exited };
}
