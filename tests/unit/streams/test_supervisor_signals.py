"""`run`'s supervisor from a terminal's seat: Ctrl-C is one graceful stop per worker, Ctrl-Z
pauses the workers with it, a closed terminal (SIGHUP) stops them gracefully.

The supervisor runs as a shell runs a foreground job: in a session of its own, so
``os.killpg(its pid, SIGINT)`` is exactly what the terminal does on Ctrl-C (every process of the
foreground group gets the signal)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

PY = sys.executable

# A worker that records every signal it gets and, like the real workers (asyncio signal handlers,
# which see each delivery: two signals are two calls), takes a while to stop gracefully.
WORKER = textwrap.dedent(
    """
    import asyncio, os, signal, sys
    log = sys.argv[1]
    async def main():
        loop = asyncio.get_running_loop()
        done = asyncio.Event()
        def record(sig):
            with open(log, "a") as fh:
                fh.write(f"{os.getpid()} {sig.name}\\n")
            if sig != signal.SIGCONT:
                loop.call_later(0.5, done.set)
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGCONT):
            loop.add_signal_handler(sig, record, sig)
        with open(log, "a") as fh:
            fh.write(f"{os.getpid()} ready\\n")
        await done.wait()
    asyncio.run(main())
    """
)


# A minimal shell: a session of its own with the supervisor as its foreground job (a process
# group of its own whose parent is in the same session, as under a terminal: job control
# signals such as Ctrl-Z's SIGTSTP are discarded for a process group without such a parent).
SHELL = textwrap.dedent(
    """
    import subprocess, sys
    job = subprocess.Popen(sys.argv[1:], process_group=0)
    print(job.pid, flush=True)
    sys.exit(job.wait())
    """
)


def start_job(tmp_path: Path) -> tuple[subprocess.Popen[str], int, Path, list[int]]:
    """A shell running the supervisor with two recording workers as its foreground job; the
    shell, the supervisor's pid (= its process group) and the workers' pids."""
    log = tmp_path / "signals.log"
    script = textwrap.dedent(
        f"""
        import sys
        from streams.supervisor import supervise
        worker = [sys.executable, "-c", {WORKER!r}, {str(log)!r}]
        sys.exit(supervise({{"stream": worker, "embed": worker}}, grace_s=20, say=print))
        """
    )
    shell = subprocess.Popen(
        [PY, "-c", SHELL, PY, "-u", "-c", script],
        start_new_session=True,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert shell.stdout is not None
    job = int(shell.stdout.readline())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready = [line.split()[0] for line in _lines(log) if line.endswith(" ready")]
        if len(ready) == 2:
            return shell, job, log, [int(p) for p in ready]
        time.sleep(0.05)
    shell.kill()
    raise AssertionError("the workers did not start")


def _lines(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def received(log: Path, pid: int) -> list[str]:
    return [line.split()[1] for line in _lines(log) if line.startswith(f"{pid} ")][1:]


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_ctrl_c_in_the_terminal_reaches_each_worker_once(tmp_path: Path) -> None:
    shell, job, log, workers = start_job(tmp_path)
    os.killpg(job, signal.SIGINT)  # what the terminal does on Ctrl-C
    out, _ = shell.communicate(timeout=30)
    assert shell.returncode == 0, out
    for pid in workers:
        assert received(log, pid) == ["SIGINT"]  # once: the second would mean "exit now"
    assert "SIGINT: stopping the workers" in out
    assert out.rstrip().endswith("workers stopped cleanly")


def test_workers_are_not_in_the_terminals_process_group(tmp_path: Path) -> None:
    shell, job, _, workers = start_job(tmp_path)
    try:
        assert all(os.getpgid(pid) != job for pid in workers)
    finally:
        os.kill(job, signal.SIGTERM)
        shell.communicate(timeout=30)
    assert shell.returncode == 0


def test_ctrl_z_pauses_the_workers_and_fg_resumes_them(tmp_path: Path) -> None:
    shell, job, log, workers = start_job(tmp_path)
    everyone = [job, *workers]
    os.killpg(job, signal.SIGTSTP)  # Ctrl-Z
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not all(state(p) == "T" for p in everyone):
        time.sleep(0.05)
    assert [state(p) for p in everyone] == ["T", "T", "T"]
    os.killpg(job, signal.SIGCONT)  # fg
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(state(p) == "T" for p in everyone):
        time.sleep(0.05)
    assert all(state(p) != "T" for p in everyone)
    os.killpg(job, signal.SIGINT)
    shell.communicate(timeout=30)
    assert shell.returncode == 0
    for pid in workers:
        assert received(log, pid)[-1] == "SIGINT"


def test_a_closed_terminal_stops_the_workers_gracefully(tmp_path: Path) -> None:
    shell, job, log, workers = start_job(tmp_path)
    os.killpg(job, signal.SIGHUP)
    shell.communicate(timeout=30)
    assert shell.returncode == 0
    for pid in workers:
        assert received(log, pid) == ["SIGTERM"]
