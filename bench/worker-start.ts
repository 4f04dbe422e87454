import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { runMain, startTestInfrastructure, withStack } from './lib/infra';
import { spawnService } from './lib/services';
import { machineLine, writeOut } from './lib/report';
import { buildWorkflowBundles, DEFAULT_BUNDLE_DIR, prebuiltBundle } from '../src/workflow-bundle';

/**
 * `npm run bench:worker-start`: how long a generation worker process takes from spawn to "worker started" (connected,
 * workflow code loaded, polling), loading the bundle `npm run build` made against bundling the workflows at start — both
 * measured in this run, alternately, on the tests' own Temporal and Postgres. Writes bench/out/worker-start.json.
 */
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const GOAL_MS = 3_000;

async function main(): Promise<number> {
  if (!('codePath' in prebuiltBundle('versioned'))) await buildWorkflowBundles();
  const unbuilt = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-unbuilt-'));
  const infrastructure = await startTestInfrastructure();
  const samples = { built: [] as number[], bundledAtStart: [] as number[] };
  try {
    await withStack({}, async (stack) => {
      for (let round = 0; round < ROUNDS; round++) {
        for (const [kind, dir] of [['built', DEFAULT_BUNDLE_DIR], ['bundledAtStart', unbuilt]] as const) {
          const began = Date.now();
          const worker = await spawnService('generation', `worker-start-${kind}-${round}`, { ...stack.env, METRICS_PORT: '0', WORKFLOW_BUNDLE_DIR: dir });
          samples[kind].push(Date.now() - began);
          await worker.stop(20_000);
        }
      }
    });
  } finally {
    await infrastructure.stop();
    fs.rmSync(unbuilt, { recursive: true, force: true });
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  const figures = {
    worker_ready_ms: median(samples.built),
    worker_ready_bundling_at_start_ms: median(samples.bundledAtStart),
    ratio: Number((median(samples.built) / median(samples.bundledAtStart)).toFixed(3)),
    goal_ms: GOAL_MS,
    met: median(samples.built) <= GOAL_MS,
    samples,
    machine: machineLine(),
  };
  process.stdout.write(`${JSON.stringify(figures, null, 2)}\n`);
  process.stdout.write(`wrote ${writeOut('worker-start.json', `${JSON.stringify(figures, null, 2)}\n`)}\n`);
  return figures.met ? 0 : 1;
}

runMain(main);
