import { buildWorkflowBundles, DEFAULT_BUNDLE_DIR, prebuiltBundle } from './workflow-bundle';

/**
 * `npm run build`: bundles the workflow code into dist/workflows (src/workflow-bundle.ts). With --if-stale (what
 * `npm start` runs), a bundle built from the current sources is kept as it is.
 */
async function main(): Promise<void> {
  if (process.argv.includes('--if-stale') && 'codePath' in prebuiltBundle('versioned')) return;
  const { ms } = await buildWorkflowBundles();
  console.log(`workflow code bundled into ${DEFAULT_BUNDLE_DIR} in ${(ms / 1000).toFixed(1)} s`);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
