#!/usr/bin/env bash
# Provides the pinned Mailpit (a local SMTP server that keeps what it receives, with a web UI and an HTTP API).
#   scripts/mailpit.sh path      print the binary's path, installing it first when missing
#   scripts/mailpit.sh install   same, quietly
# Order: $MAILPIT_BIN, then .tools/bin/mailpit, then a `mailpit` on PATH, else built from its Go module into .tools/bin.
# The module's source does not ship the compiled web UI (a plain `go install` serves a blank page), so the build copies
# the source, compiles the UI with its own npm packages (scripts/lib/mailpit-ui.mjs), then builds the binary. Without
# the npm registry the binary is built without its UI: the SMTP server and the API work, and a warning says so.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/go-tool.sh"

VERSION=1.33.1
TOOL=mailpit
TOOL_VAR=MAILPIT_BIN
TOOL_PACKAGE="github.com/axllent/mailpit@v$VERSION"
TOOL_LABEL="Mailpit $VERSION"
TOOL_ELSEWHERE="download Mailpit
(https://github.com/axllent/mailpit/releases/tag/v$VERSION) and set MAILPIT_BIN=/path/to/mailpit,
or set SMTP_URL to use another mail server (npm start then starts no Mailpit)."
TOOL_TAKES="a minute or two"

tool_build() {
  local source
  source="$(go mod download -json "$TOOL_PACKAGE" | node -e 'let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => console.log(JSON.parse(s).Dir))')"
  MAILPIT_WORK="$(mktemp -d "${TMPDIR:-/tmp}/mailpit-build.XXXXXX")"
  trap 'rm -rf "$MAILPIT_WORK"' EXIT
  local work="$MAILPIT_WORK"
  cp -r "$source/." "$work" && chmod -R u+w "$work"
  local ui=with-ui
  if ! (cd "$work" && node "$TOOLS/../../scripts/lib/mailpit-ui.mjs") >&2; then
    ui=without-ui
    echo "warning: Mailpit's web UI could not be built (npm packages unavailable?); building Mailpit without it: its SMTP server and API work, its web page is blank" >&2
  fi
  (cd "$work" && GOFLAGS=-mod=mod go build -ldflags "-s -w -X github.com/axllent/mailpit/config.Version=v$VERSION" -o "$TOOLS/$TOOL" .) >&2
  echo "$ui" >"$STAMP"
}

# A .tools/bin/mailpit this script did not build (an earlier `go install`, without the web UI) is built again.
STAMP="$TOOLS/.mailpit-$VERSION"
if [ -z "${MAILPIT_BIN:-}" ] && [ -x "$TOOLS/$TOOL" ] && [ ! -e "$STAMP" ]; then rm -f "$TOOLS/$TOOL"; fi
go_tool_main "$@"
