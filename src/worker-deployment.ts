import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { type Client, isGrpcServiceError } from '@temporalio/client';
import type { WorkerDeploymentOptions } from '@temporalio/worker';
import type { Config } from './config';
import type { Logger } from './lib/logger';

/**
 * Worker Deployment Versioning (docs/decisions.md, "Worker Deployment Versioning"). Every worker process of one build
 * polls as one version (deployment name + build id) of the deployment: the generation worker and the GPU dispatcher
 * alike, so a pinned job's GPU activity runs on the dispatcher of the code that scheduled it. Which workflows are pinned
 * and which move to the current version is declared in the entry a versioned worker loads (src/workflows/versioned.ts); new jobs go to the
 * deployment's current version, which an operator sets (docs/runbook.md, "Roll out new worker code").
 */

type Versioning = Config['worker']['versioning'];

const ROOT = path.resolve(__dirname, '..');

/** The package version and the code's commit: WORKER_BUILD_ID, else `<version>-<sha>` (sha: BUILD_GIT_SHA, git, or "dev"). */
export function buildIdOf(versioning: Versioning, root = ROOT): string {
  if (versioning.buildId) return versioning.buildId;
  const { version } = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string };
  return `${version}-${versioning.gitSha?.slice(0, 12) ?? gitHead(root) ?? 'dev'}`;
}

/** The checkout's commit, or undefined where git or the repository is absent (an image). Never throws. */
function gitHead(root: string): string | undefined {
  try {
    const sha = execFileSync('git', ['rev-parse', '--short=12', 'HEAD'], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5_000 }).trim();
    return /^[0-9a-f]{7,40}$/.test(sha) ? sha : undefined;
  } catch {
    return undefined;
  }
}

/**
 * The options every Worker of the process gets; undefined when versioning is off. Workflows declare their own behaviour
 * (src/workflows/versioned.ts; src/worker-deployment.test.ts keeps every one declared). The default is PINNED because the
 * SDK reports it, not the workflow's own, for a workflow task it completes without running the workflow's code: seen in
 * the rolling-upgrade test, one such task of a generation reported AUTO_UPGRADE and the job moved to v2 halfway. A
 * default of PINNED keeps a generation pinned; an auto-upgrading workflow that gets it stays on its version until its
 * next task reports AUTO_UPGRADE again, which at worst delays that version's drain (and its workers stop only drained).
 */
export function deploymentOptions(versioning: Versioning): WorkerDeploymentOptions | undefined {
  if (!versioning.enabled) return undefined;
  return {
    version: { deploymentName: versioning.deploymentName, buildId: buildIdOf(versioning) },
    useWorkerVersioning: true,
    defaultVersioningBehavior: 'PINNED',
  };
}

export type FirstVersionOutcome = 'made-current' | 'has-current' | 'gave-up';

/**
 * A brand-new deployment has no current version, and until it has one Temporal gives new workflows to unversioned
 * workers, of which there are none: the first version to poll makes itself current. Once a deployment has had a
 * current version (its routing config has a change time), choosing one is the operator's, and this does nothing.
 * Waits until the server lists this version (it does once a poll arrives); two workers racing resolve by conflict token.
 * `evenIfAnotherIs` (npm start's single worker, the only version there is): made current unless it already is,
 * even where its task queues have no poller yet (a GPU dispatcher polls only once it holds a slot lease).
 */
export async function makeVersionCurrent(
  client: Client,
  options: { deploymentName: string; buildId: string; identity: string; logger: Logger; timeoutMs?: number; signal?: AbortSignal; evenIfAnotherIs?: boolean },
): Promise<FirstVersionOutcome> {
  const { deploymentName, buildId, identity, logger, timeoutMs = 120_000, signal, evenIfAnotherIs = false } = options;
  const { namespace } = client.options;
  const service = client.workflowService;
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !signal?.aborted) {
    let described;
    try {
      described = await service.describeWorkerDeployment({ namespace, deploymentName });
    } catch (err) {
      // NOT_FOUND: no worker of the deployment has polled yet.
      if (!(isGrpcServiceError(err) && err.code === 5)) throw err;
    }
    const info = described?.workerDeploymentInfo;
    const current = info?.routingConfig;
    if (evenIfAnotherIs ? current?.currentDeploymentVersion?.buildId === buildId : current?.currentVersionChangedTime) return 'has-current';
    const listed = info?.versionSummaries?.some((v) => v.deploymentVersion?.buildId === buildId) ?? false;
    if (described && listed) {
      try {
        await service.setWorkerDeploymentCurrentVersion({
          namespace,
          deploymentName,
          buildId,
          conflictToken: described.conflictToken,
          identity,
          ignoreMissingTaskQueues: evenIfAnotherIs,
        });
        logger.info({ deploymentName, buildId }, 'made this worker version current: the deployment had none');
        return 'made-current';
      } catch (err) {
        // Another worker changed the deployment meanwhile (ABORTED, FAILED_PRECONDITION): describe it again.
        if (!(isGrpcServiceError(err) && (err.code === 10 || err.code === 9))) throw err;
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  return 'gave-up';
}
