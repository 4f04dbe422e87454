#!/usr/bin/env bash
# Provides the pinned Mailpit (a local SMTP server that keeps what it receives, with a web UI and an HTTP API).
#   scripts/mailpit.sh path      print the binary's path, installing it first when missing
#   scripts/mailpit.sh install   same, quietly
# Order: $MAILPIT_BIN, then .tools/bin/mailpit, then a `mailpit` on PATH, else `go install` into .tools/bin.
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
go_tool_main "$@"
