import path from 'node:path';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type ReplayWorkerOptions } from '@temporalio/worker';
import { DeterminismViolationError } from '@temporalio/workflow';
import * as workflows from '../src/workflows';
import { testDataConverter } from './payload-keys';
import { WORKFLOW_INTERCEPTOR_MODULES } from '../src/workflow-bundle';
import { historyFiles, loadHistory, readRecordings, recordingName, REPLAY_PATHS, type RecordedHistory } from './replay-histories';

/**
 * Replay safety: workflows already running when new code is deployed are replayed by it, so every recorded history
 * (test/fixtures/histories/<recording>/, written by `npm run histories:record`) must replay against the current workflow
 * code. Only the workflow bundle is needed: no Temporal server, no database.
 */
const recordings = readRecordings();
/** Every recorded history, named `<recording>/<path>`. */
const histories = recordings.flatMap(({ name, dir, index }) => index.histories.map((entry) => ({ name: `${name}/${entry.path}`, dir, entry })));
type Recorded = (typeof histories)[number];
const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} } as never;

beforeAll(() => {
  // The replay worker logs each nondeterminism it meets; the tests below read them from the results instead.
  Runtime.install({ logger: new DefaultLogger('ERROR', () => {}), telemetryOptions: { logging: { filter: 'ERROR', forward: {} } } });
});

/** The workflow code under test, with the tracing interceptors as workers run it: the run's bundle when jest's global setup built one, else bundled here. */
function currentCode(): Pick<ReplayWorkerOptions, 'workflowBundle' | 'workflowsPath' | 'dataConverter' | 'interceptors'> {
  const built = process.env.TEST_WORKFLOW_BUNDLE;
  const code = built ? { workflowBundle: { codePath: built } } : { workflowsPath: require.resolve('../src/workflows'), interceptors: { workflowModules: WORKFLOW_INTERCEPTOR_MODULES } };
  // Recordings since the payload codec hold sealed payloads (the tests' key); older ones plain ones, which pass through.
  return { ...code, dataConverter: testDataConverter() };
}

/** Replays `recorded` one by one on one replay worker; the failures, by name. */
async function replayFailures(options: ReplayWorkerOptions, recorded: Recorded[]): Promise<Record<string, string>> {
  const failures: Record<string, string> = {};
  let replayed = 0;
  // One at a time, in order: each result is the history just pushed (workflow ids may repeat across recordings).
  for await (const result of Worker.runReplayHistories(options, recorded.map(({ dir, entry }) => loadHistory(dir, entry)))) {
    const { name } = recorded[replayed];
    replayed += 1;
    if (result.error) failures[name] = `${result.error.name}: ${result.error.message}`;
  }
  expect(replayed).toBe(recorded.length);
  return failures;
}

describe('replay safety', () => {
  test('each recording names each of its files once; the newest covers every path and every workflow', () => {
    expect(recordings.length).toBeGreaterThan(0);
    for (const { name, dir, index } of recordings) {
      expect(name).toBe(recordingName(index));
      const files = index.histories.map((h: RecordedHistory) => h.file);
      expect(new Set(files).size).toBe(files.length);
      expect(historyFiles(dir)).toEqual([...files].sort());
      for (const h of index.histories) expect(h.workflowType).toBe(REPLAY_PATHS[h.path].workflowType);
    }
    const newest = recordings[recordings.length - 1].index;
    expect(newest.histories.map((h) => h.path).sort()).toEqual(Object.keys(REPLAY_PATHS).sort());
    expect([...new Set(newest.histories.map((h) => h.workflowType))].sort()).toEqual(Object.keys(workflows).sort());
  });

  test('every recorded history replays against the current workflow code', async () => {
    expect(await replayFailures({ ...currentCode(), replayName: 'current' }, histories)).toEqual({});
  });

  describe('a deliberate change to the generation workflow’s commands', () => {
    const generation = histories.filter(({ entry }) => entry.workflowType === 'generationWorkflow');
    const altered = async (file: string) => ({
      dataConverter: testDataConverter(),
      workflowBundle: await bundleWorkflowCode({ workflowsPath: path.resolve(__dirname, 'fixtures/altered-workflows', file), logger: quiet }),
    });

    test('fails to replay every recorded generation history with a determinism error: the test above can fail', async () => {
      const failures = await replayFailures({ ...(await altered('unpatched.ts')), replayName: 'unpatched' }, generation);
      expect(Object.keys(failures).sort()).toEqual(generation.map(({ name }) => name).sort());
      for (const message of Object.values(failures)) expect(message).toMatch(new RegExp(`^${DeterminismViolationError.name}: .*nondeterminism`, 's'));
    });

    test('replays every recorded generation history once it is behind patched()', async () => {
      expect(await replayFailures({ ...(await altered('patched.ts')), replayName: 'patched' }, generation)).toEqual({});
    });
  });
});
