import fs from 'node:fs';

/**
 * What Linux's /proc says of this machine's processes, for the supervisor, the tests that check what it leaves and the
 * benchmarks that count CPU. Every reader answers undefined for a process that is gone (its files vanish as it exits).
 */

/** The pid of every process now. */
export function processIds(): number[] {
  return fs
    .readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .map(Number);
}

export interface ProcStat {
  /** The executable's name, as the kernel keeps it (at most 15 characters). */
  comm: string;
  /** R, S, D, Z (a zombie: exited, not yet reaped), … */
  state: string;
  ppid: number;
  /** The process group. */
  pgrp: number;
  /** CPU time in user and in kernel mode, in clock ticks. */
  utimeTicks: number;
  stimeTicks: number;
}

/** /proc/<pid>/stat, read. */
export function procStat(pid: number): ProcStat | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The name is in parentheses and may hold spaces or parentheses itself: the fields start after the last ')'.
  const close = stat.lastIndexOf(')');
  const fields = stat.slice(close + 2).split(' ');
  return { comm: stat.slice(stat.indexOf('(') + 1, close), state: fields[0], ppid: Number(fields[1]), pgrp: Number(fields[2]), utimeTicks: Number(fields[11]), stimeTicks: Number(fields[12]) };
}

/** The command line as the kernel has it, its arguments separated by NUL. */
export function commandLine(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
  } catch {
    return undefined;
  }
}

/** Running, and not a zombie. */
export function isLive(pid: number): boolean {
  const stat = procStat(pid);
  return stat !== undefined && stat.state !== 'Z';
}
