#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, then `interest-stream demo`, which
# starts (or reuses) the local Kafka broker, runs the stream and embed workers, loads the built-in
# catalog and shows users' live profiles and recommendations as their tastes shift.
#   scripts/demo.sh            # the full demo (a few minutes on 2 cores)
#   scripts/demo.sh --fast     # smaller catalog, fewer events
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# The demo needs none of the deploy/ checking tools: `make test` installs those.
bin="$(INTEREST_DEPLOY_TOOLS=0 scripts/install.sh | tail -n 1)"
export PATH="$bin:$PATH"
exec interest-stream demo "$@"
