import globalSetup from '../test/global-setup';
import globalTeardown from '../test/global-teardown';
import { UNLIMITED_ADMISSION } from '../test/fairness-helpers';
import { equalUsersContend } from '../test/fairness-scenarios';
import { startStack } from '../test/harness';
import { runsOf } from '../test/fairness-helpers';

async function main() {
  await globalSetup();
  try {
    for (let i = 0; i < 2; i++) {
      const stack = await startStack({ env: { ...UNLIMITED_ADMISSION, GPU_SLOTS: '4', SIM_P50_MS: '3000', SIM_P99_MS: '4500' }, knobs: { capacity: 100 } });
      const r = await equalUsersContend(stack, { users: 4, jobsEach: 12, capacity: 4 });
      const all = runsOf(stack, stack.simulator.simulator.engine.list().map((j) => j.client_key.split(':')[0]));
      const ends = all.map((r) => r.completedAt!).filter(Boolean).sort((a, b) => a - b);
      const subs = all.map((r) => r.submittedAt).sort((a, b) => a - b);
      const gaps: Array<[number, number]> = [];
      let n = 0;
      for (const e of ends) { while (n < subs.length && subs[n] < e) n++; if (n >= subs.length) break; gaps.push([e - ends[0], subs[n] - e]); n++; }
      console.log(JSON.stringify({ u: r.utilisation, p99: r.handoffP99Ms, p50: r.handoffP50Ms }), JSON.stringify(gaps.filter((g) => g[1] > 200)));
      await stack.close();
    }
  } finally {
    await globalTeardown();
  }
}
main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
