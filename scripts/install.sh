#!/usr/bin/env bash
# Install interest-stream and everything it needs on this machine. Idempotent and quick when
# nothing changed: the heavy Python dependencies (torch is a multi-GB CUDA build from PyPI that
# also runs on the CPU) go into one virtual environment per machine, reinstalled only when
# pyproject.toml changes; this checkout is then installed into it in editable mode.
#
#   scripts/install.sh            # prints the venv's bin dir on its last line
#   INTEREST_VENV=/opt/is-venv scripts/install.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${INTEREST_VENV:-$HOME/.local/share/interest-stream/venv}"
python="${PYTHON:-python3}"

need_apt=()
command -v java >/dev/null 2>&1 || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${need_apt[*]} (the local Kafka broker needs Java 17+ and Maven)" >&2
    apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >&2
  else
    echo "warning: the local Kafka broker needs: ${need_apt[*]} (install them, e.g. with apt-get)" >&2
  fi
fi

if [ ! -x "$venv/bin/python" ]; then
  echo "creating virtual environment $venv" >&2
  "$python" -m venv "$venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
fi

stamp="$venv/.interest-stream-deps"
digest="$(sha256sum "$here/pyproject.toml" | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$digest" ]; then
  echo "installing Python dependencies into $venv (first time: several minutes, torch is large)" >&2
  "$venv/bin/python" -m pip install -q -e "$here[dev]" >&2
  "$venv/bin/python" -m pip check >&2
  echo "$digest" > "$stamp"
fi
# Cheap, and points the entry point at this checkout (CI clones into a fresh folder each run).
"$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$here" >&2
# The tools that check deploy/ offline (helm, kubeconform, promtool, schemas; deploy/tools.lock):
# once per machine, linked into the venv's bin; never fails. INTEREST_DEPLOY_TOOLS=0 skips them
# (scripts/demo.sh does: the demo needs none).
if [ "${INTEREST_DEPLOY_TOOLS:-1}" != 0 ]; then
  "$here/scripts/install_deploy_tools.sh" "$venv/bin" >&2 || true
fi
echo "$venv/bin"
