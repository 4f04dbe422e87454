import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { registry } from '../src/lib/metrics';

/**
 * The alert rules (deploy/prometheus/alerts.yml) are valid Prometheus rules, behave as their unit tests say
 * (alerts.test.yml: each fires on the series that should raise it and stays quiet otherwise), and name only metrics the
 * service exports — a renamed metric would otherwise silence its alert without a word.
 */
const RULES = path.resolve(__dirname, '../deploy/prometheus/alerts.yml');
const RULE_TESTS = path.resolve(__dirname, '../deploy/prometheus/alerts.test.yml');

function promtool(...args: string[]) {
  const run = spawnSync('promtool', args, { encoding: 'utf8' });
  if (run.error) throw new Error(`promtool is missing (Debian's prometheus package; .ci/run and scripts/test.sh install it): ${run.error.message}`);
  return { code: run.status, output: `${run.stdout}${run.stderr}` };
}

describe('alert rules', () => {
  test('promtool accepts them', () => {
    const check = promtool('check', 'rules', RULES);
    expect(check).toMatchObject({ code: 0 });
    expect(check.output).toMatch(/SUCCESS: 5 rules found/);
  });

  test('each fires on the series that should raise it, and not on the others (promtool test rules)', () => {
    const run = promtool('test', 'rules', RULE_TESTS);
    expect(run).toMatchObject({ code: 0 });
  });

  test('every metric they read is one the service exports', async () => {
    const exported = new Set((await registry.getMetricsAsJSON()).map((m) => m.name));
    const named = [...new Set(fs.readFileSync(RULES, 'utf8').match(/\bvg_[a-z_]+/g) ?? [])];
    const missing = named.filter((name) => !exported.has(name.replace(/_(bucket|sum|count)$/, '')));
    expect(named.length).toBeGreaterThanOrEqual(6);
    expect(missing).toEqual([]);
  });
});
