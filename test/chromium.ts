import { existsSync } from 'node:fs';
import path from 'node:path';
import { chromium, type Browser } from 'playwright-core';

/** Debian's headless Chromium, driven by playwright-core, for the tests that look at a page as a person does. */
const CHROMIUM = '/usr/bin/chromium';
const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export function launchChromium(): Promise<Browser> {
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: run \`apt-get update && apt-get install -y chromium\` (.ci/run and scripts/test.sh do)`);
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS });
}

/** Where a test keeps a screenshot for people to look at (test/artifacts/, not committed). */
export const artifactPath = (name: string) => path.join(__dirname, 'artifacts', name);
