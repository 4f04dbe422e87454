#!/usr/bin/env bash
# Provides the pinned Temporal server (the production server, not the CLI's dev server) and its SQL schema tool, for
# running Temporal on a real Postgres without docker (scripts/topology.ts).
#   scripts/temporal-server.sh install      build both into .tools/bin when missing (quietly)
#   scripts/temporal-server.sh server       print the server binary's path, installing first when missing
#   scripts/temporal-server.sh sql-tool     print temporal-sql-tool's path, installing first when missing
#   scripts/temporal-server.sh schema-dir   print the server module's schema/ folder (the versioned SQL schemas)
# Order: $TEMPORAL_SERVER_BIN / $TEMPORAL_SQL_TOOL_BIN, then .tools/bin/temporal-server / .tools/bin/temporal-sql-tool,
# else `go install` (binaries `server` and `sql`, renamed). $TEMPORAL_SCHEMA_DIR, if set, replaces the module download.
set -euo pipefail

VERSION=1.29.1
MODULE=go.temporal.io/server
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools/bin"

# find <override variable> <name in .tools/bin>
find_bin() {
  local override="${!1:-}"
  if [ -n "$override" ]; then
    if [ -x "$override" ]; then echo "$override"; return 0; fi
    echo "$1=$override is not an executable file" >&2
    exit 1
  fi
  if [ -x "$TOOLS/$2" ]; then echo "$TOOLS/$2"; return 0; fi
  return 1
}

require_go() {
  if command -v go >/dev/null 2>&1; then return 0; fi
  cat >&2 <<MSG
$1 needs Go, which is not installed. Either install Go (https://go.dev/dl) and run this again, or set
TEMPORAL_SERVER_BIN and TEMPORAL_SQL_TOOL_BIN to Temporal server $VERSION binaries and TEMPORAL_SCHEMA_DIR to the
schema/ folder of its source (https://github.com/temporalio/temporal/tree/v$VERSION/schema).
MSG
  exit 1
}

install_all() {
  local missing=()
  find_bin TEMPORAL_SERVER_BIN temporal-server >/dev/null || missing+=(server)
  find_bin TEMPORAL_SQL_TOOL_BIN temporal-sql-tool >/dev/null || missing+=(sql)
  [ ${#missing[@]} -eq 0 ] && return 0
  require_go "Building the Temporal server $VERSION"
  echo "Building the Temporal server $VERSION (${missing[*]}) into .tools/bin (first run only; takes a few minutes)..." >&2
  mkdir -p "$TOOLS"
  local gobin
  gobin=$(mktemp -d)
  trap 'rm -rf "$gobin"' RETURN
  local packages=()
  for name in "${missing[@]}"; do
    case "$name" in
      server) packages+=("$MODULE/cmd/server@v$VERSION") ;;
      sql) packages+=("$MODULE/cmd/tools/sql@v$VERSION") ;;
    esac
  done
  GOBIN="$gobin" GOFLAGS=-mod=mod go install "${packages[@]}" >&2
  [ -f "$gobin/server" ] && mv "$gobin/server" "$TOOLS/temporal-server"
  [ -f "$gobin/sql" ] && mv "$gobin/sql" "$TOOLS/temporal-sql-tool"
  return 0
}

schema_dir() {
  if [ -n "${TEMPORAL_SCHEMA_DIR:-}" ]; then
    if [ -d "$TEMPORAL_SCHEMA_DIR/postgresql" ]; then echo "$TEMPORAL_SCHEMA_DIR"; return 0; fi
    echo "TEMPORAL_SCHEMA_DIR=$TEMPORAL_SCHEMA_DIR has no postgresql/ folder" >&2
    exit 1
  fi
  require_go "Finding the Temporal server's SQL schemas"
  local dir
  # Outside any Go module, so the download is of the pinned version only (it is cached after the first time).
  dir=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$MODULE@v$VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
  if [ -z "$dir" ] || [ ! -d "$dir/schema/postgresql" ]; then
    echo "go mod download $MODULE@v$VERSION did not give a source folder with schema/postgresql" >&2
    exit 1
  fi
  echo "$dir/schema"
}

case "${1:-install}" in
  install) install_all ;;
  server) install_all && find_bin TEMPORAL_SERVER_BIN temporal-server ;;
  sql-tool) install_all && find_bin TEMPORAL_SQL_TOOL_BIN temporal-sql-tool ;;
  schema-dir) schema_dir ;;
  *) echo "usage: scripts/temporal-server.sh install|server|sql-tool|schema-dir" >&2; exit 2 ;;
esac
