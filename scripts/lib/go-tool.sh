#!/usr/bin/env bash
# Sourced by scripts/temporal.sh and scripts/mailpit.sh: a pinned tool built from its Go module into .tools/bin.
# The caller sets, then runs `go_tool_main "$@"`:
#   TOOL            the binary's name (in .tools/bin and on PATH)
#   TOOL_VAR        the variable that names a binary to use instead (e.g. TEMPORAL_BIN)
#   TOOL_PACKAGE    the Go package to install, with its pinned version (package@vX.Y.Z)
#   TOOL_LABEL      how messages name it ("the Temporal CLI 1.5.1")
#   TOOL_ELSEWHERE  the message's other ways to get it, when Go is missing
#   TOOL_TAKES      how long the first build takes ("a few minutes")
# and may define `tool_build`, which builds $TOOLS/$TOOL itself instead of `go install`.
# Commands: `path` prints the binary's path, installing it first when missing; `install` does the same quietly.
# Order: $TOOL_VAR, then .tools/bin/$TOOL, then a $TOOL on PATH, else `go install` into .tools/bin.
TOOLS="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.tools/bin"

go_tool_find() {
  local override="${!TOOL_VAR:-}"
  if [ -n "$override" ]; then
    if [ -x "$override" ]; then echo "$override"; return 0; fi
    echo "$TOOL_VAR=$override is not an executable file" >&2
    exit 1
  fi
  if [ -x "$TOOLS/$TOOL" ]; then echo "$TOOLS/$TOOL"; return 0; fi
  if command -v "$TOOL" >/dev/null 2>&1; then command -v "$TOOL"; return 0; fi
  return 1
}

go_tool_install() {
  if go_tool_find >/dev/null; then return 0; fi
  if ! command -v go >/dev/null 2>&1; then
    printf '%s is needed and was not found, and Go is not installed to build it.\nEither install Go (https://go.dev/dl) and run this again, or %s\n' "${TOOL_LABEL^}" "$TOOL_ELSEWHERE" >&2
    exit 1
  fi
  echo "Building ${TOOL_LABEL} into .tools/bin (first run only; takes ${TOOL_TAKES})..." >&2
  mkdir -p "$TOOLS"
  if declare -F tool_build >/dev/null; then
    tool_build
  else
    GOBIN="$TOOLS" GOFLAGS=-mod=mod go install "$TOOL_PACKAGE" >&2
  fi
}

go_tool_main() {
  case "${1:-path}" in
    install) go_tool_install ;;
    path) go_tool_install && go_tool_find ;;
    *) echo "usage: $0 install|path" >&2; exit 2 ;;
  esac
}
