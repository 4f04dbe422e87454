#!/usr/bin/env bash
# `npm start`: installs what is missing (npm packages, the Temporal CLI, Mailpit unless SMTP_URL is set), then runs everything in the foreground.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -x node_modules/.bin/tsx ] || [ ! -d node_modules/openapi-fetch ]; then
  echo "• installing npm packages (first run only)…"
  npm ci --no-audit --no-fund
fi
bash scripts/temporal.sh install
# The status page imports the client package, built (a few seconds, when its sources changed).
bash scripts/client-build.sh
[ -n "${SMTP_URL:-}" ] || bash scripts/mailpit.sh install
# The workflow bundle the worker loads (dist/workflows), rebuilt only when the sources changed since the last build.
node --import tsx src/build-workflows.ts --if-stale
# node itself, with tsx's loader: a signal reaches the supervisor directly (tsx's CLI would put a relaying parent between).
exec node --import tsx scripts/start.ts
