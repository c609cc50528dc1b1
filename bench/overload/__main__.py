"""``python -m bench.overload``: the overload bench; see :mod:`bench.overload`."""

from __future__ import annotations

import sys

from bench.overload.driver import main

if __name__ == "__main__":
    sys.exit(main())
