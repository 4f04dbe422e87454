import fs from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import ts from 'typescript';

/**
 * The layers of the service and the rules that keep them pointing one way, checked over the TypeScript import graph
 * (`npm run lint:layers`, test/layers.test.ts). docs/decisions.md ("Layers that point one way") says why.
 *
 * - every production file (under src/ and simulator/, tests aside) belongs to exactly one layer, and imports only its
 *   own layer and the layers that layer may import;
 * - no import cycle anywhere, type-only imports included;
 * - every file under src/ is reached from a production entry point (test helpers and bench code live elsewhere);
 * - every imported package is declared in package.json, and production code imports only `dependencies`;
 * - every relative import names a file (a moved module's old path is never taken for "outside every layer").
 */

export interface Layer {
  name: string;
  /** Repository-relative folders (ending in `/`) or files. */
  paths: string[];
  /** The layers it may import, besides its own. */
  mayImport: string[];
}

const BASE = ['lib', 'domain', 'config'];

/** Lowest first. Tests (`*.test.ts`) belong to no layer; test/, bench/ and scripts/ may import anything. */
export const LAYERS: Layer[] = [
  { name: 'lib', paths: ['src/lib/'], mayImport: [] },
  { name: 'domain', paths: ['src/domain/'], mayImport: ['lib'] },
  // The settings, and a process's start with them (a bad setting exits 78).
  { name: 'config', paths: ['src/config.ts', 'src/run-process.ts', 'src/payload-keys.ts'], mayImport: ['lib', 'domain'] },
  { name: 'db', paths: ['src/db/'], mayImport: BASE },
  { name: 'credits', paths: ['src/credits/'], mayImport: [...BASE, 'db'] },
  { name: 'backend', paths: ['src/backend/'], mayImport: BASE },
  { name: 'wire', paths: ['src/wire/'], mayImport: [...BASE, 'db'] },
  { name: 'contracts', paths: ['src/contracts/'], mayImport: [...BASE, 'db'] },
  { name: 'dispatch', paths: ['src/dispatch/'], mayImport: [...BASE, 'db', 'backend'] },
  { name: 'retention', paths: ['src/retention/'], mayImport: [...BASE, 'db'] },
  { name: 'notifications', paths: ['src/notifications/'], mayImport: [...BASE, 'db', 'wire', 'contracts'] },
  {
    name: 'activities',
    paths: ['src/activities/'],
    mayImport: [...BASE, 'db', 'credits', 'backend', 'wire', 'contracts', 'dispatch', 'retention', 'notifications'],
  },
  // Workflow code runs in Temporal's sandbox: definitions and activity types only (eslint's determinism wall).
  { name: 'workflows', paths: ['src/workflows/'], mayImport: ['domain', 'contracts', 'activities'] },
  { name: 'api', paths: ['src/api/'], mayImport: [...BASE, 'db', 'credits', 'backend', 'wire', 'contracts', 'dispatch', 'notifications'] },
  {
    name: 'processes',
    paths: ['src/worker.ts', 'src/worker-deployment.ts', 'src/migrate.ts', 'src/reconciler-schedule.ts', 'src/workflow-bundle.ts', 'src/build-workflows.ts'],
    mayImport: [...BASE, 'db', 'credits', 'backend', 'wire', 'contracts', 'dispatch', 'retention', 'notifications', 'activities', 'workflows', 'api'],
  },
  // The stand-in generation backend: the backend contract, the shared helpers and settings; never in the production image.
  { name: 'simulator', paths: ['simulator/'], mayImport: ['lib', 'config', 'backend'] },
];

/** What the production image runs; every file under src/ must be reached from one of these. */
export const PRODUCTION_ENTRIES = ['src/api/main.ts', 'src/worker.ts', 'src/migrate.ts', 'src/build-workflows.ts', 'src/workflows/index.ts', 'src/workflows/versioned.ts', 'src/workflows/tracing.ts'];

/** Imports the rules refuse but that stand for now, each with its reason. One no longer needed is reported too. */
export const KNOWN_EXCEPTIONS: Array<{ from: string; to: string; why: string }> = [
];

const SOURCE_ROOTS = ['src', 'simulator', 'test', 'bench', 'scripts'];

export interface SourceGraph {
  /** Repository-relative paths of every TypeScript file under the source roots. */
  files: string[];
  /** file → the repository files it imports. */
  imports: Map<string, string[]>;
  /** file → the packages it imports (`@scope/name` or `name`, sub-paths dropped; Node built-ins left out). */
  packages: Map<string, string[]>;
  /** Relative imports that name no file, as `file: specifier`. */
  unresolved?: string[];
}

const isTest = (file: string) => file.endsWith('.test.ts');

function walk(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    if (entry.name === 'node_modules' || entry.name.startsWith('.') || entry.name === 'artifacts' || entry.name === 'out') return [];
    const full = path.join(dir, entry.name);
    return entry.isDirectory() ? walk(full) : entry.name.endsWith('.ts') ? [full] : [];
  });
}

/** Every module specifier a file names: import and export declarations (types too), `import x = require()`, `import()` and `require()`. */
export function moduleSpecifiers(fileName: string, text: string): string[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.ES2022, false, ts.ScriptKind.TS);
  const found: string[] = [];
  const visit = (node: ts.Node): void => {
    if ((ts.isImportDeclaration(node) || ts.isExportDeclaration(node)) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      found.push(node.moduleSpecifier.text);
    } else if (ts.isImportEqualsDeclaration(node) && ts.isExternalModuleReference(node.moduleReference) && ts.isStringLiteral(node.moduleReference.expression)) {
      found.push(node.moduleReference.expression.text);
    } else if (ts.isCallExpression(node) && node.arguments.length === 1 && ts.isStringLiteral(node.arguments[0])) {
      const callee = node.expression;
      if (callee.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(callee) && callee.text === 'require')) found.push(node.arguments[0].text);
    } else if (ts.isImportTypeNode(node) && ts.isLiteralTypeNode(node.argument) && ts.isStringLiteral(node.argument.literal)) {
      found.push(node.argument.literal.text);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return found;
}

const builtins = new Set(builtinModules);

function packageName(specifier: string): string | null {
  if (specifier.startsWith('node:') || builtins.has(specifier) || builtins.has(specifier.split('/')[0])) return null;
  const parts = specifier.split('/');
  return specifier.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0];
}

/** The repository file a relative import names, or undefined when there is none. */
function resolveRelative(root: string, from: string, specifier: string): string | undefined {
  const base = path.resolve(root, path.dirname(from), specifier);
  // An ES module's `./x.js` names the `./x.ts` tsc compiles it from (the client package, clients/typescript).
  const compiledFrom = base.endsWith('.js') ? [`${base.slice(0, -3)}.ts`] : [];
  for (const candidate of [base, `${base}.ts`, path.join(base, 'index.ts'), ...compiledFrom]) {
    if (fs.existsSync(candidate) && fs.statSync(candidate).isFile()) return path.relative(root, candidate);
  }
  return undefined;
}

export function readSourceGraph(root: string): SourceGraph {
  const files = SOURCE_ROOTS.flatMap((dir) => walk(path.join(root, dir))).map((file) => path.relative(root, file)).sort();
  const imports = new Map<string, string[]>();
  const packages = new Map<string, string[]>();
  const unresolved: string[] = [];
  for (const file of files) {
    const specifiers = moduleSpecifiers(file, fs.readFileSync(path.join(root, file), 'utf8'));
    const targets: string[] = [];
    for (const specifier of specifiers.filter((s) => s.startsWith('.'))) {
      const target = resolveRelative(root, file, specifier);
      if (target === undefined) unresolved.push(`${file} imports ${specifier}, which names no file`);
      else targets.push(target);
    }
    imports.set(file, targets);
    packages.set(file, [...new Set(specifiers.filter((s) => !s.startsWith('.')).map(packageName).filter((p): p is string => p !== null))]);
  }
  return { files, imports, packages, unresolved };
}

export function layerOf(file: string, layers: Layer[] = LAYERS): Layer | undefined {
  return layers.find((layer) => layer.paths.some((p) => (p.endsWith('/') ? file.startsWith(p) : file === p)));
}

/** Production files: under src/ or simulator/, tests aside. */
export const isProduction = (file: string) => (file.startsWith('src/') || file.startsWith('simulator/')) && !isTest(file);

/** Each production file in one layer; each of its imports within what that layer may import. */
export function layerProblems(graph: SourceGraph, layers: Layer[] = LAYERS, exceptions = KNOWN_EXCEPTIONS): string[] {
  const problems: string[] = [];
  const names = new Set(layers.map((l) => l.name));
  for (const layer of layers) {
    for (const name of layer.mayImport) if (!names.has(name)) problems.push(`layer ${layer.name} may import "${name}", which is no layer`);
  }
  problems.push(...tableCycles(layers));
  const used = new Set<string>();
  for (const file of graph.files.filter(isProduction)) {
    const layer = layerOf(file, layers);
    if (!layer) {
      problems.push(`${file} belongs to no layer: add its folder to LAYERS in scripts/lib/layers.ts (and to docs/decisions.md)`);
      continue;
    }
    for (const target of graph.imports.get(file) ?? []) {
      const to = layerOf(target, layers);
      if (to === layer || (to && layer.mayImport.includes(to.name))) continue;
      const exception = exceptions.find((e) => e.from === file && e.to === target);
      if (exception) {
        used.add(`${exception.from} → ${exception.to}`);
        continue;
      }
      problems.push(`${file} (${layer.name}) imports ${target} (${to ? to.name : 'outside every layer'}): ${layer.name} may import ${layer.mayImport.join(', ') || 'no other layer'}`);
    }
  }
  for (const e of exceptions) {
    if (!used.has(`${e.from} → ${e.to}`)) problems.push(`known exception ${e.from} → ${e.to} is no longer needed: remove it from KNOWN_EXCEPTIONS`);
  }
  return problems;
}

/** The table itself must point one way: a layer reaching itself through what it may import is a cycle waiting to happen. */
function tableCycles(layers: Layer[]): string[] {
  const byName = new Map(layers.map((l) => [l.name, l]));
  const edges = new Map(layers.map((l) => [l.name, l.mayImport.filter((n) => byName.has(n))]));
  return stronglyConnected([...edges.keys()], edges).map((cycle) => `layers may import each other: ${cycle.join(' ↔ ')}`);
}

/** Import cycles between files, type-only imports included (each group of files that reach each other, named once). */
export function cycleProblems(graph: SourceGraph): string[] {
  const known = new Set(graph.files);
  const edges = new Map(graph.files.map((f) => [f, (graph.imports.get(f) ?? []).filter((t) => known.has(t))]));
  return stronglyConnected(graph.files, edges).map((group) => `import cycle: ${group.join(' → ')} → ${group[0]}`);
}

/** Tarjan's strongly connected components of more than one node (or a node importing itself), each in a cycle order. */
function stronglyConnected(nodes: string[], edges: Map<string, string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const groups: string[][] = [];
  const visit = (node: string): void => {
    index.set(node, counter);
    low.set(node, counter++);
    stack.push(node);
    onStack.add(node);
    for (const next of edges.get(node) ?? []) {
      if (!index.has(next)) {
        visit(next);
        low.set(node, Math.min(low.get(node)!, low.get(next)!));
      } else if (onStack.has(next)) low.set(node, Math.min(low.get(node)!, index.get(next)!));
    }
    if (low.get(node) !== index.get(node)) return;
    const group: string[] = [];
    let member: string;
    do {
      member = stack.pop()!;
      onStack.delete(member);
      group.push(member);
    } while (member !== node);
    if (group.length > 1 || (edges.get(node) ?? []).includes(node)) groups.push(cycleOrder(group, edges));
  };
  for (const node of nodes) if (!index.has(node)) visit(node);
  return groups;
}

/** One cycle through a group's first member, for a readable message. */
function cycleOrder(group: string[], edges: Map<string, string[]>): string[] {
  const members = new Set(group);
  const start = [...group].sort()[0];
  const previous = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const node = queue.shift()!;
    for (const next of edges.get(node) ?? []) {
      if (!members.has(next)) continue;
      if (next === start) {
        const cycle = [node];
        for (let n = node; n !== start; n = previous.get(n)!) cycle.unshift(previous.get(n)!);
        return cycle;
      }
      if (!previous.has(next)) {
        previous.set(next, node);
        queue.push(next);
      }
    }
  }
  return group;
}

/** Every file under src/ is production code: reached from an entry point of the image. */
export function reachabilityProblems(graph: SourceGraph, entries = PRODUCTION_ENTRIES): string[] {
  const reached = new Set<string>();
  const pending = [...entries];
  while (pending.length > 0) {
    const file = pending.pop()!;
    if (reached.has(file)) continue;
    reached.add(file);
    pending.push(...(graph.imports.get(file) ?? []));
  }
  return graph.files
    .filter((f) => f.startsWith('src/') && !isTest(f) && !reached.has(f))
    .map((f) => `${f} is not reached from the production entry points (${entries.join(', ')}): test or bench code belongs in test/ or bench/`);
}

export interface PackageManifest {
  dependencies?: Record<string, string>;
  devDependencies?: Record<string, string>;
}

/** Every imported package declared; production code (src/, simulator/) uses only `dependencies`, as the image installs only those. */
export function packageProblems(graph: SourceGraph, manifest: PackageManifest): string[] {
  const runtime = new Set(Object.keys(manifest.dependencies ?? {}));
  const dev = new Set(Object.keys(manifest.devDependencies ?? {}));
  const problems: string[] = [];
  for (const file of graph.files) {
    for (const name of graph.packages.get(file) ?? []) {
      if (isProduction(file) && !runtime.has(name)) {
        problems.push(`${file} imports ${name}, which is not in package.json's dependencies${dev.has(name) ? ' (only a devDependency: the production image has no such package)' : ''}`);
      } else if (!runtime.has(name) && !dev.has(name)) {
        problems.push(`${file} imports ${name}, which package.json does not declare`);
      }
    }
  }
  return problems;
}

/** Every rule, over the repository at `root`; empty when all hold. */
export function architectureProblems(root: string): string[] {
  const graph = readSourceGraph(root);
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as PackageManifest;
  return [...(graph.unresolved ?? []), ...layerProblems(graph), ...cycleProblems(graph), ...reachabilityProblems(graph), ...packageProblems(graph, manifest)];
}
