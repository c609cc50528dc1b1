"""``interest-stream run``: the stream and embed workers as two supervised child processes.

Separate processes because each worker owns its event loop (faust runs its own) and because that
is how they scale in production (any number of each, in their consumer groups). The supervisor
forwards SIGTERM/SIGINT to both children, waits for their graceful shutdown, and if either child
dies, stops the other and exits with the child's status: a half-running pipeline is not hidden.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger(__name__)

GRACE_S = 30.0
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def worker_command(name: str, extra: Sequence[str] = ()) -> list[str]:
    return [sys.executable, "-m", "streams.cli", name, *extra]


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies, even by SIGKILL (Linux).

    Without it a killed supervisor leaves its workers running as orphans.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the graceful paths still apply
        pass


def supervise(commands: dict[str, list[str]], grace_s: float = GRACE_S) -> int:
    """Run ``commands`` until one exits or a signal arrives; return the exit status."""
    children = {
        name: subprocess.Popen(cmd, preexec_fn=_die_with_parent) for name, cmd in commands.items()
    }
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        if stopping:  # second signal: no more patience
            for proc in children.values():
                proc.kill()
            return
        stopping = True
        for proc in children.values():
            if proc.poll() is None:
                proc.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = 0
        while True:
            exited = {n: p.returncode for n, p in children.items() if p.poll() is not None}
            if exited:
                name, code = next(iter(exited.items()))
                if not stopping:
                    log.error("%s worker exited with status %s; stopping the others", name, code)
                    status = code or 1
                    forward(signal.SIGTERM, None)
                break
            time.sleep(0.2)
        deadline = time.monotonic() + grace_s
        for proc in children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if status == 0:  # a graceful stop: report a child that failed while shutting down
            clean = (0, -signal.SIGTERM, -signal.SIGINT)
            failed = [p.returncode for p in children.values() if p.returncode not in clean]
            status = abs(failed[0]) if failed else 0
        return status
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
