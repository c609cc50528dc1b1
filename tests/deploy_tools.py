"""Where the tests find the tools and schemas that check deploy/ offline.

scripts/install_deploy_tools.sh (run by scripts/install.sh) builds helm and kubeconform from the Go
module proxy, unpacks promtool from Debian's prometheus package and keeps a few files of Go modules
(Kubernetes' OpenAPI document, KEDA's and the Prometheus operator's CRDs, the Compose schema), all
under ``~/.cache/interest-stream/tools`` (``INTEREST_TOOLS_DIR``), at the versions in
deploy/tools.lock. A test whose tool is missing skips and says which and how to get it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
TOOLS = Path(os.environ.get("INTEREST_TOOLS_DIR") or Path.home() / ".cache/interest-stream/tools")
INSTALL_HINT = "scripts/install.sh installs it (scripts/install_deploy_tools.sh, deploy/tools.lock)"


def versions() -> dict[str, str]:
    """deploy/tools.lock as ``{"HELM_VERSION": "v3.21.4", ...}``."""
    pairs = {}
    for line in (DEPLOY / "tools.lock").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def find_tool(name: str) -> str | None:
    """The tool on PATH, next to this Python (the venv's bin) or in the tools dir; else None."""
    for candidate in (
        shutil.which(name),
        Path(sys.executable).parent / name,
        TOOLS / "bin" / name,
    ):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def require_tool(name: str) -> str:
    """The tool's path, or skip the test with the reason."""
    path = find_tool(name)
    if path is None:
        pytest.skip(f"{name} is not installed: {INSTALL_HINT}")
    return path


def module_data(name: str, version_key: str, *parts: str) -> Path:
    """A file kept from a Go module (``data/NAME@VERSION/PARTS``), or skip with the reason."""
    path = TOOLS / "data" / f"{name}@{versions()[version_key]}" / Path(*parts)
    if not path.exists():
        pytest.skip(f"{path} is missing: {INSTALL_HINT}")
    return path
