#!/usr/bin/env bash
# The project's test command (README: `make test`; CI: .ci/run). Installs what is missing,
# starts the real local Kafka broker on a test port with a fresh data dir, runs lint, type checks
# and the whole pytest suite against it, and stops the broker even when something fails.
#
#   scripts/test.sh                    # everything
#   scripts/test.sh tests/unit -x      # extra arguments go to pytest
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="$(scripts/install.sh | tail -n 1)"
export PATH="$bin:$PATH"
export INTEREST_DATA_DIR="${INTEREST_TEST_DATA_DIR:-$HOME/.cache/interest-stream/test-data}"
export INTEREST_BROKER_PORT="${INTEREST_TEST_BROKER_PORT:-29092}"
export INTEREST_KAFKA_BOOTSTRAP="127.0.0.1:${INTEREST_BROKER_PORT}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

# A broker left over from an interrupted run is stopped, and every run starts from empty storage.
interest-stream broker stop >/dev/null
rm -rf "$INTEREST_DATA_DIR"
mkdir -p "$INTEREST_DATA_DIR"
trap 'interest-stream broker stop' EXIT
interest-stream broker start

echo "== lint and types"
ruff check .
ruff format --check .
mypy

echo "== tests"
python -m pytest "$@"
