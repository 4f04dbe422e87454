import globalSetup from '../../test/global-setup';
import globalTeardown from '../../test/global-teardown';
import { startStack, type Stack } from '../../test/harness';
import type { SimulatorKnobs } from '../../simulator/knobs';

/**
 * Startup shared by the benchmarks (`npm run bench`, `npm run bench:fairness`): the tests' own infrastructure — a real
 * Temporal dev server (fairness on, one partition), a fresh Postgres and the workflow bundle (test/global-setup.ts) — and
 * whole stacks on it (test/harness.ts), each with task queues of its own.
 */
export async function startTestInfrastructure(): Promise<{ stop(): Promise<void> }> {
  await globalSetup();
  stopOnSignal(() => globalTeardown());
  return { stop: () => globalTeardown() };
}

/** Runs `run` on a stack of its own (simulator, API, worker in this process), closed afterwards whatever happens. */
export async function withStack<T>(
  { env = {}, knobs = {}, inProcessWorkers }: { env?: Record<string, string>; knobs?: Partial<SimulatorKnobs>; inProcessWorkers?: boolean },
  run: (stack: Stack) => Promise<T>,
): Promise<T> {
  const stack = await startStack({ env, knobs, inProcessWorkers });
  try {
    return await run(stack);
  } finally {
    await stack.close();
  }
}

/** On Ctrl-C or SIGTERM, `stop` what was started (servers, processes) before exiting, rather than leaving it running. */
export function stopOnSignal(stop: () => Promise<void>): void {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => {
      process.stdout.write(`\n${signal}: stopping…\n`);
      void stop()
        .catch((err: unknown) => console.error(err))
        .finally(() => process.exit(130));
    });
  }
}

/** `--name=value` of the command line: the value, or undefined. */
export function cliOption(name: string): string | undefined {
  return process.argv.find((arg) => arg.startsWith(`--${name}=`))?.slice(name.length + 3);
}

/** A benchmark's entry point: exits with the code `main` returns (0 by default), 1 when it throws. */
export function runMain(main: () => Promise<number | void>): void {
  main().then(
    (code) => process.exit(code ?? 0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
