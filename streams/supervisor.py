"""``interest-stream run``: the stream and embed workers as two supervised child processes.

Separate processes because each worker owns its event loop (faust runs its own) and because that
is how they scale in production (any number of each, in their consumer groups).

Signals reach each worker exactly once. The workers run in their own process group, so Ctrl-C in
a terminal (SIGINT to the terminal's foreground process group) reaches only the supervisor, which
passes it on once; a worker that got the signal twice would take the second as "exit now, without
committing". SIGTERM and SIGHUP stop the workers the same way (as SIGTERM), and a second signal
kills them. Ctrl-Z (SIGTSTP) stops the workers with the supervisor and ``fg`` (SIGCONT) resumes
them. If either child dies, the supervisor stops the other and exits with the child's status: a
half-running pipeline is not hidden. If the supervisor itself is killed, the kernel sends SIGTERM
to the workers (Linux ``PR_SET_PDEATHSIG``), so no orphan keeps its consumer groups.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from types import FrameType

log = logging.getLogger(__name__)

GRACE_S = 30.0
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
#: Stop signals, and what each is passed on to the workers as.
STOP_SIGNALS = {
    signal.SIGINT: signal.SIGINT,
    signal.SIGTERM: signal.SIGTERM,
    signal.SIGHUP: signal.SIGTERM,
}
#: Exit statuses of a worker that stopped because it was asked to.
CLEAN = (0, -signal.SIGTERM, -signal.SIGINT)
TICK_S = 0.2


def worker_command(name: str, extra: Sequence[str] = ()) -> list[str]:
    """A worker as the supervisor starts it (the environment was checked once, by ``run``)."""
    return [sys.executable, "-m", "streams.cli", "--no-env-check", name, *extra]


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if the supervisor dies, even by SIGKILL (Linux).

    Without it a killed supervisor leaves its workers running as orphans.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the graceful paths still apply
        pass


class Supervisor:
    """Starts the workers, passes stop signals on once, and reports how they ended.

    ``tick(elapsed_s)`` is called about every 0.2 s while the workers run and no stop was asked
    for (``run`` uses it to say when they are up); ``say`` gets one line when a stop begins and
    one when it ends.
    """

    def __init__(
        self,
        commands: dict[str, list[str]],
        grace_s: float = GRACE_S,
        *,
        tick: Callable[[float], None] | None = None,
        say: Callable[[str], None] | None = None,
    ) -> None:
        self.commands = commands
        self.grace_s = grace_s
        self.tick = tick
        self.say = say or (lambda line: None)
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stop_signal: int | None = None  # the first stop signal received
        self.signals = 0

    def run(self) -> int:
        """Run the workers until one exits or a stop signal arrives; return the exit status."""
        handled = (*STOP_SIGNALS, signal.SIGTSTP, signal.SIGCONT)
        previous = {sig: signal.signal(sig, self._on_signal) for sig in handled}
        try:
            self._start()
            status = self._wait_for_end()
            self._reap()
            return self._final_status(status)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _start(self) -> None:
        for name, cmd in self.commands.items():
            self.children[name] = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                preexec_fn=_die_with_parent,
                process_group=0,  # out of the terminal's foreground group: one Ctrl-C each
            )

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGTSTP:
            self._suspend()
            return
        if signum == signal.SIGCONT:
            self._send_all(signal.SIGCONT)
            return
        self.signals += 1
        if self.stop_signal is not None:  # a second signal: no more patience
            self._send_all(signal.SIGKILL)
            return
        self.stop_signal = signum
        self._send_all(STOP_SIGNALS.get(signal.Signals(signum), signal.SIGTERM))

    def _suspend(self) -> None:
        """Ctrl-Z: stop the workers, then this process as the terminal asked (``fg`` resumes:
        SIGCONT arrives here and is passed on)."""
        self._send_all(signal.SIGSTOP)
        signal.signal(signal.SIGTSTP, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTSTP)
        signal.signal(signal.SIGTSTP, self._on_signal)
        self._send_all(signal.SIGCONT)

    def _send_all(self, sig: int) -> None:
        for proc in self.children.values():
            if proc.poll() is None:
                proc.send_signal(sig)

    def _wait_for_end(self) -> int:
        """Until a worker exits or a stop is asked for; the status a failed worker sets."""
        started = time.monotonic()
        while True:
            exited = {n: p.returncode for n, p in self.children.items() if p.poll() is not None}
            if self.stop_signal is not None:
                self.say(_stopping_line(self.stop_signal))
                return 0
            if exited:
                name, code = next(iter(exited.items()))
                log.error("%s worker exited with status %s; stopping the others", name, code)
                self.say(f"the {name} worker exited with status {code}; stopping the others")
                self.stop_signal = signal.SIGTERM  # a signal from now on kills
                self._send_all(signal.SIGTERM)
                return code or 1
            if self.tick is not None:
                self.tick(time.monotonic() - started)
            time.sleep(TICK_S)

    def _reap(self) -> None:
        deadline = time.monotonic() + self.grace_s
        for proc in self.children.values():
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _final_status(self, status: int) -> int:
        if status == 0:  # a graceful stop: report a child that failed while shutting down
            failed = [
                (n, p.returncode) for n, p in self.children.items() if p.returncode not in CLEAN
            ]
            if failed:
                name, code = failed[0]
                self.say(f"the {name} worker ended with status {code} while stopping")
                return abs(int(code))
            self.say("workers stopped cleanly")
        return status


def _stopping_line(signum: int) -> str:
    name = signal.Signals(signum).name
    return (
        f"{name}: stopping the workers (each finishes its batch, commits and leaves its consumer "
        "group); press Ctrl-C again to exit at once"
    )


def supervise(
    commands: dict[str, list[str]],
    grace_s: float = GRACE_S,
    *,
    tick: Callable[[float], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> int:
    """Run ``commands`` until one exits or a signal arrives; return the exit status."""
    return Supervisor(commands, grace_s, tick=tick, say=say).run()
