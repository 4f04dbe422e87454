import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

/** Figures as a table on stdout, and as JSON + Markdown under bench/out (git-ignored). */
export const OUT_DIR = path.resolve(__dirname, '..', 'out');

export interface Row {
  section: string;
  figure: string;
  value: string;
  /** What the figure should be, e.g. "≥ 0.8"; empty for context figures. */
  goal?: string;
  /** undefined for context figures (no goal). */
  met?: boolean;
}

export function verdict(met: boolean | undefined): string {
  return met === undefined ? '' : met ? 'met' : 'MISSED';
}

export function formatTable(rows: Row[]): string {
  const cells = [['section', 'figure', 'value', 'goal', ''], ...rows.map((r) => [r.section, r.figure, r.value, r.goal ?? '', verdict(r.met)])];
  const widths = cells[0].map((_, i) => Math.max(...cells.map((row) => [...row[i]].length)));
  const line = (row: string[]) => row.map((cell, i) => cell + ' '.repeat(widths[i] - [...cell].length)).join('  ').trimEnd();
  return [line(cells[0]), widths.map((w) => '─'.repeat(w)).join('  '), ...cells.slice(1).map(line)].join('\n');
}

export function formatMarkdown(title: string, rows: Row[], notes: string[] = []): string {
  const escape = (s: string) => s.replace(/\|/g, '\\|');
  return [
    `# ${title}`,
    '',
    machineLine(),
    '',
    '| section | figure | value | goal | |',
    '|---|---|---|---|---|',
    ...rows.map((r) => `| ${escape(r.section)} | ${escape(r.figure)} | ${escape(r.value)} | ${escape(r.goal ?? '')} | ${verdict(r.met)} |`),
    '',
    ...notes.map((n) => `- ${n}`),
    '',
  ].join('\n');
}

export function machineLine(): string {
  const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  return `Machine: ${os.cpus().length} CPUs (${os.cpus()[0]?.model.trim() ?? 'unknown'}), ${gib(os.totalmem())} RAM, load average ${os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')} (1, 5, 15 min) when written, Node ${process.version}, ${new Date().toISOString()}.`;
}

export function writeOut(file: string, contents: string): string {
  fs.mkdirSync(OUT_DIR, { recursive: true });
  const target = path.join(OUT_DIR, file);
  fs.writeFileSync(target, contents);
  return path.relative(process.cwd(), target);
}
