"""``python -m bench.chaos``: the chaos run (``make chaos``); see :mod:`bench.chaos`."""

from __future__ import annotations

import sys

from bench.chaos.driver import main

if __name__ == "__main__":
    sys.exit(main())
