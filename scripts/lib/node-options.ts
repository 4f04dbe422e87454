/**
 * The Node flags every service process (API, workers, simulator) runs with, wherever it is started: `npm start`
 * (scripts/start.ts), the image and compose (Dockerfile, docker-compose.yml and package.json repeat them:
 * test/node-options.test.ts keeps them equal), and the tests', benchmark's and chaos campaign's child processes
 * (test/processes.ts).
 *
 * `--max-semi-space-size=64`: a young generation of up to 2 × 64 MiB instead of V8's 2 × 16 MiB. A request's objects
 * (parsed body, rows, the answer) die young; with the small default the scavenger ran so often that it was 14% of a status
 * read's CPU and promoted objects of requests still in flight to the old generation. With it, the API's CPU per status read
 * fell about 4% (docs/decisions.md), for about 100 MiB more memory per process under load.
 */
export const SERVICE_NODE_OPTIONS = '--max-semi-space-size=64';

/** NODE_OPTIONS for a service process: the service's flags after any the caller already set. */
export function serviceNodeOptions(inherited: string | undefined): string {
  return [inherited?.trim(), SERVICE_NODE_OPTIONS].filter(Boolean).join(' ');
}

/**
 * The flags that go on a service's command line instead, as Node refuses them in NODE_OPTIONS.
 *
 * `--min-semi-space-size=16`: the young generation starts at 2 × 16 MiB instead of 2 × 1 MiB. V8 grows it only when many
 * objects survive a scavenge, and a worker's objects die young (an activation, a statement, a payload), so it stayed
 * small: the generation worker's two heaps were scavenged about twice per job, some 2 ms each. With it, the workers' CPU
 * per job fell by 4 to 7 ms in three interleaved runs (docs/decisions.md, "Worker CPU per job", eighth pass), for about
 * 30 MiB more memory per heap.
 */
export const SERVICE_NODE_ARGS: readonly string[] = ['--min-semi-space-size=16'];

/** `node`'s arguments that start a service's entry point: its flags, then TypeScript through tsx's loader. */
export function serviceNodeArgs(entry: string): string[] {
  return [...SERVICE_NODE_ARGS, '--import', 'tsx', entry];
}
