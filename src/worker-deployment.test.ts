import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadConfig } from './config';
import { buildIdOf, deploymentOptions } from './worker-deployment';
import * as unversioned from './workflows';
import * as workflows from './workflows/versioned';

const versioning = (env: Record<string, string> = {}) => loadConfig(env).worker.versioning;
const version = JSON.parse(fs.readFileSync(path.resolve(__dirname, '../package.json'), 'utf8')).version as string;

describe('worker deployment versioning', () => {
  test('on by default: deployment videogen, the package version and the checkout commit as build id', () => {
    const options = deploymentOptions(versioning());
    expect(options).toMatchObject({ useWorkerVersioning: true, defaultVersioningBehavior: 'PINNED', version: { deploymentName: 'videogen' } });
    expect(options?.version.buildId).toMatch(new RegExp(`^${version.replace(/\./g, '\\.')}-[0-9a-f]{12}$`));
  });

  test('WORKER_VERSIONING=false leaves the workers unversioned', () => {
    expect(deploymentOptions(versioning({ WORKER_VERSIONING: 'false' }))).toBeUndefined();
  });

  test('WORKER_BUILD_ID overrides; BUILD_GIT_SHA stands in for git; without either and without git, "dev"', () => {
    expect(buildIdOf(versioning({ WORKER_BUILD_ID: 'release-42' }))).toBe('release-42');
    expect(buildIdOf(versioning({ BUILD_GIT_SHA: '0123456789abcdef0123' }))).toBe(`${version}-0123456789ab`);
    // An image: a package.json, no repository, and here no git binary either.
    const image = fs.mkdtempSync(path.join(os.tmpdir(), 'vg-image-'));
    fs.writeFileSync(path.join(image, 'package.json'), JSON.stringify({ version: '9.9.9' }));
    const PATH = process.env.PATH;
    process.env.PATH = image;
    try {
      expect(buildIdOf(versioning(), image)).toBe('9.9.9-dev');
    } finally {
      process.env.PATH = PATH;
      fs.rmSync(image, { recursive: true });
    }
  });

  test('names Temporal would refuse are refused at boot', () => {
    expect(() => versioning({ WORKER_DEPLOYMENT_NAME: 'video.gen' })).toThrow(/WORKER_DEPLOYMENT_NAME/);
    expect(() => versioning({ WORKER_DEPLOYMENT_NAME: '__videogen' })).toThrow(/WORKER_DEPLOYMENT_NAME/);
    expect(() => versioning({ WORKER_BUILD_ID: 'has space' })).toThrow(/WORKER_BUILD_ID/);
    expect(() => versioning({ BUILD_GIT_SHA: 'main' })).toThrow(/BUILD_GIT_SHA/);
    expect(versioning({ WORKER_BUILD_ID: '', BUILD_GIT_SHA: '' })).toMatchObject({ buildId: undefined, gitSha: undefined });
  });

  test('every workflow of the versioned entry declares its versioning behaviour: generations pinned, the rest auto-upgrade', () => {
    const behaviourOf = (fn: unknown) => (fn as { workflowDefinitionOptions?: { versioningBehavior?: string } }).workflowDefinitionOptions?.versioningBehavior;
    const declared = Object.fromEntries(Object.entries(workflows).map(([name, fn]) => [name, behaviourOf(fn)]));
    expect(Object.keys(declared).sort()).toEqual(Object.keys(unversioned).sort());
    expect(declared).toEqual({
      generationWorkflow: 'PINNED',
      webhookDeliveryWorkflow: 'AUTO_UPGRADE',
      reconcilerWorkflow: 'AUTO_UPGRADE',
      retentionWorkflow: 'AUTO_UPGRADE',
      emailDigestWorkflow: 'AUTO_UPGRADE',
    });
  });
});
