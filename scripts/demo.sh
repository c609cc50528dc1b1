#!/usr/bin/env bash
# The main job on a fresh machine: install, start the local Kafka broker, run the pipeline.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin="$(scripts/install.sh | tail -n 1)"
export PATH="$bin:$PATH"
interest-stream broker start
exec interest-stream run "$@"
