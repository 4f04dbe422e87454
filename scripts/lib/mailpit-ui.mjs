// Builds Mailpit's web UI (server/ui/dist) in a copy of its Go module's source, which does not ship the compiled UI:
// without it the binary serves its API but a blank page. Run by scripts/mailpit.sh with the copy as the working folder.
// Only what the UI's main app needs is installed (the lint and end-to-end tools are left out, and so is the API docs
// page's rapidoc), at the newest versions within Mailpit's own ranges, with no install scripts.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import process from 'node:process';

const manifest = JSON.parse(readFileSync('package.json', 'utf8'));
const BUILD_TOOLS = ['esbuild', 'esbuild-plugin-vue-next', 'esbuild-sass-plugin', '@vue/compiler-sfc'];
delete manifest.dependencies.rapidoc;
manifest.devDependencies = Object.fromEntries(BUILD_TOOLS.map((name) => [name, manifest.devDependencies[name]]));
delete manifest.overrides;
delete manifest['//overrides'];
writeFileSync('package.json', JSON.stringify(manifest, null, 2));
execFileSync('npm', ['install', '--ignore-scripts', '--no-audit', '--no-fund', '--no-package-lock', '--loglevel=error'], { stdio: ['ignore', 'ignore', 'inherit'] });

// The tools are the copy's own, found from its folder.
const require = createRequire(join(process.cwd(), 'package.json'));
const { build } = require('esbuild');
const vuePlugin = require('esbuild-plugin-vue-next');
const vue = vuePlugin.default ?? vuePlugin;
const { sassPlugin } = require('esbuild-sass-plugin');
await build({
  entryPoints: ['server/ui-src/app.js'],
  bundle: true,
  minify: true,
  define: { __VUE_OPTIONS_API__: 'true', __VUE_PROD_DEVTOOLS__: 'false', __VUE_PROD_HYDRATION_MISMATCH_DETAILS__: 'false' },
  outdir: 'server/ui/dist/',
  plugins: [vue(), sassPlugin({ silenceDeprecations: ['import'], quietDeps: true })],
  loader: { '.svg': 'file', '.woff': 'file', '.woff2': 'file' },
  logLevel: 'warning',
});
