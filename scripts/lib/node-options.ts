/**
 * The Node flags every service process (API, workers, simulator) runs with, wherever it is started: `npm start`
 * (scripts/start.ts), the image (Dockerfile, which repeats them: test/node-options.test.ts keeps the two equal), and the
 * tests', benchmark's and chaos campaign's child processes (test/processes.ts).
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
