"""The images' HEALTHCHECK: ``GET /healthz`` of the worker in this container, on localhost.

Exits 0 when every worker of the role answers 200 (consuming), 1 otherwise: 503 while starting,
recovering or stopping, or no answer at all. The ports follow the same settings the workers read
(``INTEREST_STREAM_METRICS_PORT``, ``INTEREST_API_PORT``), so a moved port needs no new image.

    python healthcheck.py stream | embed | run
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

#: role -> (variable, default port) of each worker in the container.
ENDPOINTS = {
    "stream": [("INTEREST_STREAM_METRICS_PORT", "8766")],
    "embed": [("INTEREST_API_PORT", "8765")],
}
ENDPOINTS["run"] = ENDPOINTS["stream"] + ENDPOINTS["embed"]


def healthy(port: str, timeout_s: float = 4.0) -> bool:
    """True when ``http://127.0.0.1:PORT/healthz`` answers 200."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout_s) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] not in ENDPOINTS:
        print(f"usage: healthcheck.py {'|'.join(ENDPOINTS)}", file=sys.stderr)
        return 2
    ports = [os.environ.get(name) or default for name, default in ENDPOINTS[argv[1]]]
    down = [p for p in ports if not healthy(p)]
    if down:
        print(f"not healthy: /healthz on port(s) {', '.join(down)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
