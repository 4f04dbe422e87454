import path from 'node:path';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type BundleOptions } from '@temporalio/worker';
import { testDataConverter } from '../test/payload-keys';
import { loadHistory, readRecordings } from '../test/replay-histories';
import { bundleOptions } from '../src/workflow-bundle';
import { cliOption as option, runMain } from './lib/infra';
import { machineLine, writeOut } from './lib/report';

/**
 * `npm run bench:replay [-- --baseline=<checkout>] [--runs=N] [--jobs=N]`: the workflow side of a job's CPU, alone. The
 * newest recording's "success by callback" history is replayed N times in this process, by the workflow code of this
 * checkout and, with a baseline, by that checkout's (bundled with its own options), the two taking turns; the first
 * round of each is a warm-up and not counted. Replaying a history runs what a generation worker runs for that job's
 * workflow tasks (the sandbox, the SDK's activations, the payload codec) without the Temporal server, the database or the
 * network, so the figure moves with the workflow code and far less with the machine's other load than
 * `--worker-cpu-only` does. Writes bench/out/replay-cpu.json.
 */
const RUNS = Number(option('runs') ?? 5);
const JOBS = Number(option('jobs') ?? 300);
const BASELINE = option('baseline');
const PATH = 'success-by-callback';

const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {}, log() {} } as never;

/** A checkout's workflow code, bundled with the options that checkout builds with. */
async function bundleOf(root: string): Promise<string> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- the other checkout's own module, chosen at run time
  const own = root === path.resolve(__dirname, '..') ? { bundleOptions } : (require(path.join(root, 'src/workflow-bundle')) as { bundleOptions: (entry: string) => Omit<BundleOptions, 'logger'> });
  return (await bundleWorkflowCode({ ...own.bundleOptions('plain'), logger: quiet })).code;
}

async function main(): Promise<number> {
  Runtime.install({ logger: new DefaultLogger('ERROR', () => {}), telemetryOptions: { logging: { filter: 'ERROR', forward: {} } } });
  const recording = readRecordings().at(-1)!;
  const entry = recording.index.histories.find((h) => h.path === PATH)!;
  const sides: Record<string, string> = { this: await bundleOf(path.resolve(__dirname, '..')) };
  if (BASELINE) sides.baseline = await bundleOf(path.resolve(BASELINE));
  const samples: Record<string, number[]> = Object.fromEntries(Object.keys(sides).map((side) => [side, []]));
  for (let run = 0; run <= RUNS; run++) {
    for (const [side, code] of Object.entries(sides)) {
      const histories = Array.from({ length: JOBS }, (_, i) => ({ ...loadHistory(recording.dir, entry), workflowId: `replay-${side}-${run}-${i}` }));
      const before = process.cpuUsage();
      for await (const result of Worker.runReplayHistories({ workflowBundle: { code }, dataConverter: testDataConverter() }, histories)) {
        if (result.error) throw result.error;
      }
      const used = process.cpuUsage(before);
      const msPerJob = (used.user + used.system) / 1000 / JOBS;
      if (run > 0) samples[side].push(msPerJob);
      process.stdout.write(`${run === 0 ? 'warm-up ' : ''}${side}: ${msPerJob.toFixed(2)} ms of CPU per replayed job\n`);
    }
  }
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  const round = (n: number) => Math.round(n * 100) / 100;
  const figures = {
    history: `${recording.name}/${PATH}`,
    jobs_per_run: JOBS,
    replay_cpu_ms_per_job: round(mean(samples.this)),
    ...(BASELINE ? { baseline: path.resolve(BASELINE), baseline_replay_cpu_ms_per_job: round(mean(samples.baseline)), ratio: round(mean(samples.this) / mean(samples.baseline)) } : {}),
    samples: Object.fromEntries(Object.entries(samples).map(([side, xs]) => [side, xs.map(round)])),
    machine: machineLine(),
  };
  process.stdout.write(`${JSON.stringify(figures, null, 2)}\n`);
  process.stdout.write(`wrote ${writeOut('replay-cpu.json', `${JSON.stringify(figures, null, 2)}\n`)}\n`);
  return 0;
}

runMain(main);
