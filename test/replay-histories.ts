import fs from 'node:fs';
import path from 'node:path';
import type { HistoryAndWorkflowId } from '@temporalio/client';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';

/**
 * The recorded histories that every build must replay (test/replay.test.ts): one real history per path a workflow can
 * take, written by `npm run histories:record` (scripts/record-histories.ts) into test/fixtures/histories/.
 */
export const HISTORIES_DIR = path.resolve(__dirname, 'fixtures/histories');
export const HISTORIES_INDEX = path.join(HISTORIES_DIR, 'index.json');

/** Every path the fixtures must cover, with the workflow type whose history records it. */
export const REPLAY_PATHS = {
  'success-by-callback': { workflowType: 'generationWorkflow', what: 'a job that succeeds, told by the backend’s callbacks' },
  'success-by-polling': { workflowType: 'generationWorkflow', what: 'a job that succeeds with every callback lost: its polls tell it' },
  'transient-failure-then-success': { workflowType: 'generationWorkflow', what: 'a transient backend failure, then a second attempt that succeeds' },
  'permanent-failure': { workflowType: 'generationWorkflow', what: 'a permanent backend failure: failed at once, no second attempt' },
  'cancel-while-queued': { workflowType: 'generationWorkflow', what: 'canceled by its user while waiting for a GPU slot' },
  'cancel-while-running': { workflowType: 'generationWorkflow', what: 'canceled by its user while the backend runs it' },
  'queue-timeout': { workflowType: 'generationWorkflow', what: 'no GPU slot within MAX_QUEUE_MS: queue_timeout' },
  'run-timeout': { workflowType: 'generationWorkflow', what: 'a backend job that hangs past MAX_RUN_MS: last poll, backend cancel, generation_timeout' },
  'insufficient-credits': { workflowType: 'generationWorkflow', what: 'an operator’s retry (reset) of a job whose user can no longer pay: insufficient_credits' },
  'operator-reset': { workflowType: 'generationWorkflow', what: 'a job failed in a backend outage, retried by an operator’s reset, then succeeding' },
  'operator-terminate': { workflowType: 'generationWorkflow', what: 'a running job an operator terminated (the reconciler ends its row)' },
  'webhook-delivered': { workflowType: 'webhookDeliveryWorkflow', what: 'a webhook delivered on its first attempt' },
  'webhook-retried': { workflowType: 'webhookDeliveryWorkflow', what: 'a webhook whose receiver failed twice, delivered on the third attempt' },
  'webhook-exhausted': { workflowType: 'webhookDeliveryWorkflow', what: 'a webhook whose receiver never answered 2xx: the whole retry schedule, then failed' },
  'reconciler-pass': { workflowType: 'reconcilerWorkflow', what: 'a reconciler pass that ended a terminated job' },
  'retention-pass': { workflowType: 'retentionWorkflow', what: 'a retention pass' },
} as const;

export type ReplayPath = keyof typeof REPLAY_PATHS;

export interface RecordedHistory {
  path: ReplayPath;
  file: string;
  workflowType: string;
  workflowId: string;
  runId: string;
  /** How the workflow closed: COMPLETED, FAILED, TERMINATED, … */
  closedAs: string;
  events: number;
  what: string;
}

export interface HistoriesIndex {
  /** When and from which commit the histories were recorded, and with which SDK and Temporal server. */
  recordedAt: string;
  build: { commit: string; dirty: boolean };
  sdk: string;
  temporal: string;
  histories: RecordedHistory[];
}

export function readHistoriesIndex(): HistoriesIndex {
  return JSON.parse(fs.readFileSync(HISTORIES_INDEX, 'utf8')) as HistoriesIndex;
}

/** The JSON files in the fixtures folder other than the index. */
export function historyFiles(): string[] {
  return fs
    .readdirSync(HISTORIES_DIR)
    .filter((f) => f.endsWith('.json') && f !== path.basename(HISTORIES_INDEX))
    .sort();
}

/** A recorded history as the replayer takes it (Temporal's JSON history format, as `temporal workflow show -o json` writes). */
export function loadHistory(entry: RecordedHistory): HistoryAndWorkflowId {
  return { workflowId: entry.workflowId, history: historyFromJSON(JSON.parse(fs.readFileSync(path.join(HISTORIES_DIR, entry.file), 'utf8'))) };
}
