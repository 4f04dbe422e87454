#!/usr/bin/env bash
# Builds the TypeScript client (clients/typescript/dist: ESM and type declarations) unless it is newer than its sources.
# The API serves it to the status page at /client/, so `npm start`, `npm test` and the status page's test run this.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=clients/typescript/dist/index.js
if [ -f "$out" ] && [ -z "$(find clients/typescript/src clients/typescript/tsconfig.json clients/typescript/package.json -newer "$out" -print -quit)" ]; then
  exit 0
fi
rm -rf clients/typescript/dist
npx tsc -p clients/typescript/tsconfig.json
