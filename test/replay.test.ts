import path from 'node:path';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type ReplayWorkerOptions } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import * as workflows from '../src/workflows';
import { historyFiles, loadHistory, readHistoriesIndex, REPLAY_PATHS, type RecordedHistory } from './replay-histories';

/**
 * Replay safety: workflows already running when new code is deployed are replayed by it, so every recorded history
 * (test/fixtures/histories/, written by `npm run histories:record`) must replay against the current workflow code. Only
 * the workflow bundle is needed: no Temporal server, no database.
 */
const index = readHistoriesIndex();
const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} } as never;

beforeAll(() => {
  // The replay worker logs each nondeterminism it meets; the tests below read them from the results instead.
  Runtime.install({ logger: new DefaultLogger('ERROR', () => {}), telemetryOptions: { logging: { filter: 'ERROR', forward: {} } } });
});

/** The workflow code under test: the run's bundle when jest's global setup built one, else bundled here. */
function currentCode(): Pick<ReplayWorkerOptions, 'workflowBundle' | 'workflowsPath'> {
  const built = process.env.TEST_WORKFLOW_BUNDLE;
  return built ? { workflowBundle: { codePath: built } } : { workflowsPath: require.resolve('../src/workflows') };
}

/** Replays `entries` one by one on one replay worker; the failures, by path. */
async function replayFailures(options: ReplayWorkerOptions, entries: RecordedHistory[]): Promise<Record<string, string>> {
  const byWorkflowId = new Map(entries.map((e) => [e.workflowId, e.path]));
  const failures: Record<string, string> = {};
  let replayed = 0;
  for await (const result of Worker.runReplayHistories(options, entries.map(loadHistory))) {
    replayed += 1;
    if (result.error) failures[byWorkflowId.get(result.workflowId) ?? result.workflowId] = `${result.error.name}: ${result.error.message}`;
  }
  expect(replayed).toBe(entries.length);
  return failures;
}

describe('replay safety', () => {
  test('the recorded histories cover every path and every workflow, and the index names each file once', () => {
    const files = index.histories.map((h) => h.file);
    expect(new Set(files).size).toBe(files.length);
    expect(historyFiles()).toEqual([...files].sort());
    expect(index.histories.map((h) => h.path).sort()).toEqual(Object.keys(REPLAY_PATHS).sort());
    for (const h of index.histories) expect(h.workflowType).toBe(REPLAY_PATHS[h.path].workflowType);
    expect([...new Set(index.histories.map((h) => h.workflowType))].sort()).toEqual(Object.keys(workflows).sort());
  });

  test('every recorded history replays against the current workflow code', async () => {
    expect(await replayFailures({ ...currentCode(), replayName: 'current' }, index.histories)).toEqual({});
  });

  describe('a deliberate change to the generation workflow’s commands', () => {
    const generation = index.histories.filter((h) => h.workflowType === 'generationWorkflow');
    const altered = async (file: string) => ({
      workflowBundle: await bundleWorkflowCode({ workflowsPath: path.resolve(__dirname, 'fixtures/altered-workflows', file), logger: quiet }),
    });

    test('fails to replay every recorded generation history with a determinism error: the test above can fail', async () => {
      const failures = await replayFailures({ ...(await altered('unpatched.ts')), replayName: 'unpatched' }, generation);
      expect(Object.keys(failures).sort()).toEqual(generation.map((h) => h.path).sort());
      for (const message of Object.values(failures)) expect(message).toMatch(new RegExp(`^${DeterminismViolationError.name}: .*nondeterminism`, 's'));
    });

    test('replays every recorded generation history once it is behind patched()', async () => {
      expect(await replayFailures({ ...(await altered('patched.ts')), replayName: 'patched' }, generation)).toEqual({});
    });
  });
});
