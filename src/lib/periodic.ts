/**
 * Runs `pass` every `everyMs` (and once at the start with `now`), one pass at a time: a tick that finds the previous
 * pass still running is skipped, so a slow pass never piles up behind itself. A pass that throws is handed to `onError`
 * and the next tick runs as usual.
 */
export function everyInTurn(
  everyMs: number,
  pass: () => Promise<void>,
  { now = false, onError }: { now?: boolean; onError: (err: unknown) => void },
): { stop(): void } {
  let busy = false;
  const run = async () => {
    if (busy) return;
    busy = true;
    try {
      await pass();
    } catch (err) {
      onError(err);
    } finally {
      busy = false;
    }
  };
  if (now) void run();
  const timer = setInterval(() => void run(), everyMs);
  return { stop: () => clearInterval(timer) };
}
