#!/usr/bin/env bash
# Provides the pinned Temporal CLI (whose `server start-dev` is the local Temporal server).
#   scripts/temporal.sh path      print the binary's path, installing it first when missing
#   scripts/temporal.sh install   same, quietly
# Order: $TEMPORAL_BIN, then .tools/bin/temporal, then a `temporal` on PATH, else `go install` into .tools/bin.
set -euo pipefail

VERSION=1.5.1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools/bin"

find_temporal() {
  if [ -n "${TEMPORAL_BIN:-}" ]; then
    if [ -x "$TEMPORAL_BIN" ]; then echo "$TEMPORAL_BIN"; return 0; fi
    echo "TEMPORAL_BIN=$TEMPORAL_BIN is not an executable file" >&2
    exit 1
  fi
  if [ -x "$TOOLS/temporal" ]; then echo "$TOOLS/temporal"; return 0; fi
  if command -v temporal >/dev/null 2>&1; then command -v temporal; return 0; fi
  return 1
}

install_temporal() {
  if find_temporal >/dev/null; then return 0; fi
  if ! command -v go >/dev/null 2>&1; then
    cat >&2 <<MSG
The Temporal CLI $VERSION is needed and was not found, and Go is not installed to build it.
Either install Go (https://go.dev/dl) and run this again, or download the Temporal CLI
(https://github.com/temporalio/cli/releases/tag/v$VERSION) and set TEMPORAL_BIN=/path/to/temporal.
MSG
    exit 1
  fi
  echo "Building the Temporal CLI $VERSION into .tools/bin (first run only; takes a few minutes)..." >&2
  mkdir -p "$TOOLS"
  GOBIN="$TOOLS" GOFLAGS=-mod=mod go install "github.com/temporalio/cli/cmd/temporal@v$VERSION" >&2
}

case "${1:-path}" in
  install) install_temporal ;;
  path) install_temporal && find_temporal ;;
  *) echo "usage: scripts/temporal.sh install|path" >&2; exit 2 ;;
esac
