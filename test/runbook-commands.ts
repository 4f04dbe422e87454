import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { temporalBinary } from '../scripts/lib/temporal-dev-server';
import type { Stack } from './harness';

/**
 * The command blocks of docs/runbook.md, run exactly as written with the real `temporal` binary: by the runbook's own
 * test, and by `npm run histories:record` where an operator's step is part of a recorded path.
 */
const RUNBOOK = fs.readFileSync(path.resolve(__dirname, '../docs/runbook.md'), 'utf8');

export function runbookCommand(name: string): string {
  const match = new RegExp('```sh runbook:' + name + '\\n([\\s\\S]*?)```').exec(RUNBOOK);
  if (!match) throw new Error(`docs/runbook.md has no block runbook:${name}`);
  return match[1];
}

/** The variables the runbook's commands use, pointed at a stack. */
export function runbookEnv(stack: Stack): Record<string, string> {
  return {
    PATH: `${path.dirname(temporalBinary())}:${process.env.PATH}`,
    HOME: process.env.HOME ?? '/tmp',
    TEMPORAL_ADDRESS: stack.config.temporal.address,
    API_URL: stack.apiUrl,
    ADMIN_URL: stack.adminUrl,
    ADMIN_API_KEY: stack.adminApiKey,
    GENERATION_TASK_QUEUE: stack.config.worker.generationTaskQueue,
  };
}

/** Runs the runbook block `name` with `env`, JOB_ID and any more variables; resolves to what it printed. */
export async function runRunbook(name: string, env: Record<string, string>, jobId = '', more: Record<string, string> = {}): Promise<string> {
  const { stdout } = await promisify(execFile)('bash', ['-c', runbookCommand(name)], { env: { ...env, JOB_ID: jobId, ...more } });
  return stdout;
}
