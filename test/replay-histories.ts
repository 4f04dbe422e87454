import fs from 'node:fs';
import path from 'node:path';
import type { HistoryAndWorkflowId } from '@temporalio/client';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';

/**
 * The recorded histories that every build must replay (test/replay.test.ts): one real history per path a workflow can
 * take, written by `npm run histories:record` (scripts/record-histories.ts). Each recording is a folder of its own,
 * test/fixtures/histories/<date>-<commit>/, with an index.json; a new recording is added beside the older ones, which
 * stay for as long as runs of the code they were recorded with can still be open (docs/decisions.md, "Replay safety").
 */
export const HISTORIES_DIR = path.resolve(__dirname, 'fixtures/histories');
const INDEX = 'index.json';

/** Every path the fixtures must cover, with the workflow type whose history records it. */
export const REPLAY_PATHS = {
  'success-by-callback': { workflowType: 'generationWorkflow', what: 'a job that succeeds, told by the backend’s callbacks' },
  'success-by-polling': { workflowType: 'generationWorkflow', what: 'a job that succeeds with every callback lost: its polls tell it' },
  'transient-failure-then-success': { workflowType: 'generationWorkflow', what: 'a transient backend failure, then a second attempt that succeeds' },
  'permanent-failure': { workflowType: 'generationWorkflow', what: 'a permanent backend failure: failed at once, no second attempt' },
  'cancel-while-queued': { workflowType: 'generationWorkflow', what: 'canceled by its user while waiting for a GPU slot' },
  'cancel-while-running': { workflowType: 'generationWorkflow', what: 'canceled by its user while the backend runs it' },
  'queue-timeout': { workflowType: 'generationWorkflow', what: 'no GPU slot within MAX_QUEUE_MS: expired, queue_timeout' },
  'run-timeout': { workflowType: 'generationWorkflow', what: 'a backend job that hangs past MAX_RUN_MS: last poll, backend cancel, generation_timeout' },
  'insufficient-credits': { workflowType: 'generationWorkflow', what: 'an operator’s retry (reset) of a job whose user can no longer pay: insufficient_credits' },
  'operator-reset': { workflowType: 'generationWorkflow', what: 'a job failed in a backend outage, retried by an operator’s reset, then succeeding' },
  'operator-terminate': { workflowType: 'generationWorkflow', what: 'a running job an operator terminated (the reconciler ends its row)' },
  'routed-to-second-backend': { workflowType: 'generationWorkflow', what: 'two backends: a job only the second (dearer) one renders, routed there' },
  'failed-over-mid-run': { workflowType: 'generationWorkflow', what: 'two backends: a running job whose backend went down, failed over to the other' },
  'rerouted-off-paused-pool': { workflowType: 'generationWorkflow', what: 'two backends: a job waiting in the queue of a backend whose pool was paused, moved to the other' },
  'webhook-delivered': { workflowType: 'webhookDeliveryWorkflow', what: 'a webhook delivered on its first attempt' },
  'webhook-retried': { workflowType: 'webhookDeliveryWorkflow', what: 'a webhook whose receiver failed twice, delivered on the third attempt' },
  'webhook-exhausted': { workflowType: 'webhookDeliveryWorkflow', what: 'a webhook whose receiver never answered 2xx: the whole retry schedule, then failed' },
  'reconciler-pass': { workflowType: 'reconcilerWorkflow', what: 'a reconciler pass that ended a terminated job' },
  'retention-pass': { workflowType: 'retentionWorkflow', what: 'a retention pass' },
  'email-digest': { workflowType: 'emailDigestWorkflow', what: 'two endings of a user mailed in one digest, then idle: the run ends' },
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
  /** dirty: src/ differed from the commit (a change recorded before it was committed). */
  build: { commit: string; dirty: boolean };
  sdk: string;
  temporal: string;
  histories: RecordedHistory[];
}

/** A recording's folder name: the day it was recorded and the commit it was recorded from (with changes to src/ or not). */
export function recordingName({ recordedAt, build }: HistoriesIndex): string {
  return `${recordedAt.slice(0, 10)}-${build.commit.slice(0, 7)}${build.dirty ? '-modified' : ''}`;
}

export interface Recording {
  name: string;
  dir: string;
  index: HistoriesIndex;
}

/** Every recording, oldest first. */
export function readRecordings(): Recording[] {
  return fs
    .readdirSync(HISTORIES_DIR, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => {
      const dir = path.join(HISTORIES_DIR, entry.name);
      return { name: entry.name, dir, index: JSON.parse(fs.readFileSync(path.join(dir, INDEX), 'utf8')) as HistoriesIndex };
    })
    .sort((a, b) => a.index.recordedAt.localeCompare(b.index.recordedAt));
}

/** The JSON files of a recording's folder other than its index. */
export function historyFiles(dir: string): string[] {
  return fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json') && f !== INDEX)
    .sort();
}

/** Writes a recording's folder whole: its histories (file name to JSON text) and its index. */
export function writeRecording(dir: string, files: Map<string, string>, index: HistoriesIndex): void {
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  for (const [file, text] of files) fs.writeFileSync(path.join(dir, file), text);
  fs.writeFileSync(path.join(dir, INDEX), `${JSON.stringify(index, null, 2)}\n`);
}

/** A recorded history as the replayer takes it (Temporal's JSON history format, as `temporal workflow show -o json` writes). */
export function loadHistory(dir: string, entry: RecordedHistory): HistoryAndWorkflowId {
  return { workflowId: entry.workflowId, history: historyFromJSON(JSON.parse(fs.readFileSync(path.join(dir, entry.file), 'utf8'))) };
}
