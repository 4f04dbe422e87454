#!/usr/bin/env bash
# The test command: type-check, lint, then every jest suite against a real Temporal dev server and a real Postgres
# (embedded unless DATABASE_URL names a server), all started by test/global-setup.ts.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
[ -d node_modules ] || npm ci
bash scripts/temporal.sh install
# The tests that read mail read it from a Mailpit of their own (test/global-setup.ts).
bash scripts/mailpit.sh install
# test/status-page.test.ts drives Debian's headless Chromium.
command -v chromium >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium; }
# test/alert-rules.test.ts checks deploy/prometheus/ with promtool (Debian's prometheus package).
command -v promtool >/dev/null || { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y prometheus; }
npx tsc --noEmit -p .
# The benchmarks and the chaos campaign share the service's code: they must keep compiling with it.
npx tsc --noEmit -p bench
# The client package (clients/typescript): its committed types match the OpenAPI document the API serves, and it builds
# (ESM and declarations, type-checked by tsc) for the status page; test/client.test.ts runs it against the service.
npx tsx scripts/client-types.ts --check
bash scripts/client-build.sh
npx eslint .
# The layers point one way, no import cycles, src/ is production code, every package declared (scripts/lib/layers.ts).
npx tsx scripts/layers.ts
# The self-hosting compose file: no docker engine runs here, so it is linted, not started.
npx dclint docker-compose.yml
# --forceExit: the Temporal native runtime keeps a handle open after its workers have shut down.
npx jest --runInBand --forceExit "$@"
