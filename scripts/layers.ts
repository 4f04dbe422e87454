/**
 * `npm run lint:layers`: fails when an import breaks the layering (scripts/lib/layers.ts), closes a cycle, when src/
 * holds code the production image does not run, or a package is imported without being declared.
 */
import path from 'node:path';
import { architectureProblems } from './lib/layers';

const problems = architectureProblems(path.resolve(__dirname, '..'));
if (problems.length > 0) {
  process.stderr.write(`${problems.length} architecture rule(s) broken:\n${problems.map((p) => `  - ${p}`).join('\n')}\n`);
  process.exit(1);
}
process.stdout.write('layers: every import points one way, no cycles, src/ is production code, every package declared\n');
