#!/usr/bin/env bash
# Provides the pinned Temporal CLI (whose `server start-dev` is the local Temporal server).
#   scripts/temporal.sh path      print the binary's path, installing it first when missing
#   scripts/temporal.sh install   same, quietly
# Order: $TEMPORAL_BIN, then .tools/bin/temporal, then a `temporal` on PATH, else `go install` into .tools/bin.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/go-tool.sh"

VERSION=1.5.1
TOOL=temporal
TOOL_VAR=TEMPORAL_BIN
TOOL_PACKAGE="github.com/temporalio/cli/cmd/temporal@v$VERSION"
TOOL_LABEL="the Temporal CLI $VERSION"
TOOL_ELSEWHERE="download the Temporal CLI
(https://github.com/temporalio/cli/releases/tag/v$VERSION) and set TEMPORAL_BIN=/path/to/temporal."
TOOL_TAKES="a few minutes"
go_tool_main "$@"
