#!/usr/bin/env bash
# Provides the pinned Mailpit (a local SMTP server that keeps what it receives, with a web UI and an HTTP API).
#   scripts/mailpit.sh path      print the binary's path, installing it first when missing
#   scripts/mailpit.sh install   same, quietly
# Order: $MAILPIT_BIN, then .tools/bin/mailpit, then a `mailpit` on PATH, else `go install` into .tools/bin.
set -euo pipefail

VERSION=1.33.1
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools/bin"

find_mailpit() {
  if [ -n "${MAILPIT_BIN:-}" ]; then
    if [ -x "$MAILPIT_BIN" ]; then echo "$MAILPIT_BIN"; return 0; fi
    echo "MAILPIT_BIN=$MAILPIT_BIN is not an executable file" >&2
    exit 1
  fi
  if [ -x "$TOOLS/mailpit" ]; then echo "$TOOLS/mailpit"; return 0; fi
  if command -v mailpit >/dev/null 2>&1; then command -v mailpit; return 0; fi
  return 1
}

install_mailpit() {
  if find_mailpit >/dev/null; then return 0; fi
  if ! command -v go >/dev/null 2>&1; then
    cat >&2 <<MSG
Mailpit $VERSION is needed and was not found, and Go is not installed to build it.
Either install Go (https://go.dev/dl) and run this again, or download Mailpit
(https://github.com/axllent/mailpit/releases/tag/v$VERSION) and set MAILPIT_BIN=/path/to/mailpit,
or set SMTP_URL to use another mail server (npm start then starts no Mailpit).
MSG
    exit 1
  fi
  echo "Building Mailpit $VERSION into .tools/bin (first run only; takes a minute or two)..." >&2
  mkdir -p "$TOOLS"
  GOBIN="$TOOLS" GOFLAGS=-mod=mod go install "github.com/axllent/mailpit@v$VERSION" >&2
}

case "${1:-path}" in
  install) install_mailpit ;;
  path) install_mailpit && find_mailpit ;;
  *) echo "usage: scripts/mailpit.sh install|path" >&2; exit 2 ;;
esac
