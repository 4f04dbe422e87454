import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { bundleWorkflowCode, type BundleOptions } from '@temporalio/worker';

/**
 * Workflow code bundled once, at build time (`npm run build`, the image's build step), so a worker loads a file instead
 * of running webpack over src/ at every start (which took most of a worker's start-up). Two entries: the versioned one
 * (each workflow declares its versioning behaviour) that deployed workers run, and the plain one for workers with
 * versioning off.
 */
export const WORKFLOW_ENTRIES = {
  versioned: require.resolve('./workflows/versioned'),
  plain: require.resolve('./workflows'),
} as const;
export type WorkflowEntry = keyof typeof WORKFLOW_ENTRIES;

/** Where `npm run build` writes the bundles, beside a manifest naming the sources they were built from. */
export const DEFAULT_BUNDLE_DIR = path.resolve(__dirname, '..', 'dist', 'workflows');
const MANIFEST = 'manifest.json';
const ROOT = path.resolve(__dirname, '..');

/**
 * The workflow side of tracing (src/lib/tracing.ts), in every bundle: it traces only runs a traced client started, and
 * loads Temporal's OpenTelemetry interceptors only for those, so with tracing off it costs a header check per run.
 */
export const WORKFLOW_INTERCEPTOR_MODULES = [require.resolve('./workflows/tracing')];

/**
 * The modules a worker evaluates once, when it sets up its sandbox, rather than once for every run it creates or
 * replays: the entry with all it imports (the workflows, the domain rules and contracts they use) and the interceptor
 * module. The sandbox shares them between runs, frozen, so they must hold no state of a run: at module scope they only
 * define functions, constants and activity proxies (which find the run when called). Temporal's OpenTelemetry
 * interceptors are not among them; the tracing module loads them for a traced run, into that run's own modules.
 * docs/decisions.md ("Worker CPU per job", eleventh pass).
 */
function preloadedModules(workflowsPath: string): string[] {
  return [workflowsPath, ...WORKFLOW_INTERCEPTOR_MODULES];
}

/** The bundler's options for one entry: one place, so the build, the tests' bundle and the history recorder agree. */
export function bundleOptions(entry: WorkflowEntry | string): Omit<BundleOptions, 'logger'> {
  const workflowsPath = entry in WORKFLOW_ENTRIES ? WORKFLOW_ENTRIES[entry as WorkflowEntry] : entry;
  return { workflowsPath, workflowInterceptorModules: WORKFLOW_INTERCEPTOR_MODULES, preloadModules: preloadedModules(workflowsPath) };
}

const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error: (m: string) => console.error(m), log() {} };

/** Bundles one entry's workflow code (webpack; a few seconds). */
export async function bundleWorkflows(entry: WorkflowEntry | string): Promise<string> {
  const { code } = await bundleWorkflowCode({ ...bundleOptions(entry), logger: quiet as never });
  return code;
}

/**
 * What a bundle was built from: every source file under src/ (its unit tests aside) and the locked dependency versions (the workflow SDK is
 * bundled in). Any change makes a bundle stale, which a worker refuses rather than run code other than the sources'.
 */
export function sourceFingerprint(root = ROOT): string {
  const hash = createHash('sha256');
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (/\.(ts|js|json|sql)$/.test(entry.name) && !entry.name.endsWith('.test.ts')) files.push(full);
    }
  };
  walk(path.join(root, 'src'));
  files.push(path.join(root, 'package-lock.json'));
  for (const file of files.sort()) {
    hash.update(path.relative(root, file));
    hash.update('\0');
    hash.update(fs.existsSync(file) ? fs.readFileSync(file) : '');
    hash.update('\0');
  }
  return hash.digest('hex');
}

interface Manifest {
  fingerprint: string;
  builtAt: string;
  entries: Record<string, string>;
}

/** Builds every entry into `dir` and writes the manifest last, so a half-written build is never taken as current. */
export async function buildWorkflowBundles(dir = DEFAULT_BUNDLE_DIR): Promise<{ dir: string; fingerprint: string; ms: number }> {
  const started = Date.now();
  const fingerprint = sourceFingerprint();
  fs.mkdirSync(dir, { recursive: true });
  fs.rmSync(path.join(dir, MANIFEST), { force: true });
  const entries: Record<string, string> = {};
  for (const entry of Object.keys(WORKFLOW_ENTRIES) as WorkflowEntry[]) {
    const file = `${entry}.js`;
    fs.writeFileSync(path.join(dir, file), await bundleWorkflows(entry));
    entries[entry] = file;
  }
  const manifest: Manifest = { fingerprint, builtAt: new Date().toISOString(), entries };
  fs.writeFileSync(path.join(dir, MANIFEST), `${JSON.stringify(manifest, null, 2)}\n`);
  return { dir, fingerprint, ms: Date.now() - started };
}

export type PrebuiltBundle = { codePath: string } | { missing: string };

/** The built bundle of an entry, if one was built from the sources as they are now; else why not. */
export function prebuiltBundle(entry: WorkflowEntry, dir = DEFAULT_BUNDLE_DIR, fingerprint = sourceFingerprint()): PrebuiltBundle {
  let manifest: Manifest;
  try {
    manifest = JSON.parse(fs.readFileSync(path.join(dir, MANIFEST), 'utf8')) as Manifest;
  } catch {
    return { missing: `no workflow bundle in ${dir}` };
  }
  if (manifest.fingerprint !== fingerprint) return { missing: `the workflow bundle in ${dir} was built from other sources (${manifest.builtAt})` };
  const file = manifest.entries[entry];
  if (!file || !fs.existsSync(path.join(dir, file))) return { missing: `the workflow bundle in ${dir} lacks the ${entry} entry` };
  return { codePath: path.join(dir, file) };
}
