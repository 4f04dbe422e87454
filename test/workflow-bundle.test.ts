import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Connection, isGrpcServiceError } from '@temporalio/client';
import ts from 'typescript';
import { ConfigError, loadConfig } from '../src/config';
import { createLogger } from '../src/lib/logger';
import { createWorkers } from '../src/worker';
import { buildWorkflowBundles, prebuiltBundle, sourceFingerprint } from '../src/workflow-bundle';
import { eventually } from './eventually';
import { installQuietRuntime, testEnv } from './harness';
import { TEST_PAYLOAD_KEYS } from './payload-keys';

/**
 * `npm run build` bundles the workflow code once; a worker loads that bundle, and outside development refuses to start
 * without one built from the sources it runs (src/workflow-bundle.ts).
 */
jest.setTimeout(120_000);

const logger = createLogger('test-bundle', 'silent');
const dirs: string[] = [];
const tempDir = () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-built-'));
  dirs.push(dir);
  return dir;
};
afterAll(() => dirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

/** A production worker's settings, on this run's Temporal and Postgres, with task queues and a deployment of its own. */
function productionConfig(bundleDir: string) {
  const { temporalAddress, databaseUrl } = testEnv();
  const own = randomBytes(4).toString('hex');
  return loadConfig({
    NODE_ENV: 'production',
    ADMIN_API_KEY: `vgadmin_${randomBytes(24).toString('base64url')}`,
    BACKEND_WEBHOOK_SECRET: `whsec_${randomBytes(24).toString('base64')}`,
    DATABASE_URL: databaseUrl,
    TEMPORAL_ADDRESS: temporalAddress,
    WORKER_ROLE: 'generation',
    GENERATION_TASK_QUEUE: `bundle-${own}`,
    GPU_TASK_QUEUE: `bundle-gpu-${own}`,
    WORKER_DEPLOYMENT_NAME: `bundle-${own}`,
    WORKER_BUILD_ID: 'built',
    WORKFLOW_BUNDLE_DIR: bundleDir,
    PAYLOAD_KEYS: TEST_PAYLOAD_KEYS,
  });
}

/** The project's modules in a bundle (webpack names each by its path: "./src/…"). */
function bundledSources(code: string): string[] {
  return [...new Set([...code.matchAll(/^\/\*{3}\/ "\.\/(src\/[^"]+\.ts)"/gm)].map((m) => m[1]))].sort();
}

/** The module-scope declarations of a source file that can carry state from one run to the next, as `line: text`. */
function moduleScopeState(file: string): string[] {
  const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, true);
  const found: string[] = [];
  const at = (node: ts.Node) => `${path.relative(process.cwd(), file)}:${source.getLineAndCharacterOfPosition(node.getStart()).line + 1}: ${node.getText().split('\n')[0]}`;
  for (const statement of source.statements) {
    if (!ts.isVariableStatement(statement)) continue;
    const list = statement.declarationList;
    if (!(list.flags & ts.NodeFlags.Const)) {
      found.push(at(statement));
      continue;
    }
    for (const declaration of list.declarations) {
      const init = declaration.initializer;
      // A collection typed read-only (ReadonlyMap, ReadonlySet) cannot be written to; any other can.
      const readOnly = declaration.type !== undefined && /^Readonly/.test(declaration.type.getText());
      if (init && ts.isNewExpression(init) && /^(Map|Set|WeakMap|WeakSet|Array)$/.test(init.expression.getText()) && !readOnly) found.push(at(declaration));
    }
  }
  return found;
}

/** The task queues Temporal has registered for a worker deployment version, once it has any (waits up to 30 s). */
async function registeredQueues(deploymentVersion: { deploymentName: string; buildId: string }): Promise<string[]> {
  const connection = await Connection.connect({ address: testEnv().temporalAddress });
  try {
    return await eventually(
      async () => {
        const described = await connection.workflowService.describeWorkerDeploymentVersion({ namespace: 'default', deploymentVersion }).catch((err: unknown) => {
          // NOT_FOUND until the first poll has arrived.
          if (isGrpcServiceError(err) && err.code === 5) return undefined;
          throw err;
        });
        const queues = (described?.workerDeploymentVersionInfo?.taskQueueInfos ?? []).map((q) => q.name ?? '');
        return queues.length > 0 ? queues : undefined;
      },
      { timeoutMs: 30_000, intervalMs: 200, what: 'the worker version to be registered' },
    );
  } finally {
    await connection.close();
  }
}

describe('the workflow bundle built once', () => {
  let built: string;
  beforeAll(async () => {
    built = tempDir();
    await buildWorkflowBundles(built);
  });

  it('is taken only while the sources are the ones it was built from', () => {
    const versioned = prebuiltBundle('versioned', built);
    const plain = prebuiltBundle('plain', built);
    expect(versioned).toEqual({ codePath: path.join(built, 'versioned.js') });
    expect(plain).toEqual({ codePath: path.join(built, 'plain.js') });
    // The versioned entry declares each workflow's versioning behaviour; the plain one does not.
    expect(fs.readFileSync(path.join(built, 'versioned.js'), 'utf8')).toContain('AUTO_UPGRADE');

    const edited = prebuiltBundle('versioned', built, sourceFingerprint() + '0');
    expect(edited).toEqual({ missing: expect.stringContaining('built from other sources') });
    expect(prebuiltBundle('versioned', tempDir())).toEqual({ missing: expect.stringContaining('no workflow bundle') });
  });

  it('preloads the project’s workflow modules (evaluated once per worker, not per run), none of which holds state at module scope', () => {
    for (const [entry, source] of [['plain.js', 'src/workflows/index.ts'], ['versioned.js', 'src/workflows/versioned.ts']]) {
      const code = fs.readFileSync(path.join(built, entry), 'utf8');
      // The sandbox evaluates what preloadModules requires once, and shares it with every run (src/workflow-bundle.ts).
      const preload = /exports\.preloadModules = function preloadModules\(\) \{([^}]*)\}/.exec(code)?.[1] ?? '';
      expect(preload).toContain(`"./${source}"`);
      expect(preload).toContain('"./src/workflows/tracing.ts"');
      const shared = bundledSources(code);
      expect(shared).toEqual(expect.arrayContaining(['src/workflows/generation.ts', 'src/domain/generation-state.ts']));
      // Shared between runs, a module-scope `let`, `var` or collection would carry one run's state into another's.
      expect(shared.flatMap((file) => moduleScopeState(path.resolve(__dirname, '..', file)))).toEqual([]);
    }
  });

  it('is what a production worker loads, and a production worker without one stops before connecting to anything', async () => {
    installQuietRuntime();
    const unbuilt = productionConfig(tempDir());
    // No Temporal answers on port 1: the refusal must come before any connection is tried.
    const unreachable = { ...unbuilt, temporal: { ...unbuilt.temporal, address: '127.0.0.1:1' } };
    const refused = createWorkers({ config: unreachable, databaseUrl: unbuilt.database.url!, logger });
    await expect(refused).rejects.toThrow(ConfigError);
    await expect(refused).rejects.toThrow(/npm run build/);

    const config = productionConfig(built);
    const workers = await createWorkers({ config, databaseUrl: config.database.url!, logger });
    const running = workers.run();
    // Temporal lists the version with its task queue once the worker's first poll has registered it. Stopped before
    // then, the canceled poll would cancel the registration half-way.
    const version = { deploymentName: config.worker.versioning.deploymentName, buildId: 'built' };
    await expect(registeredQueues(version)).resolves.toContain(config.worker.generationTaskQueue);
    workers.shutdown();
    await running;
    expect(workers.version).toEqual(version);
  });
});
