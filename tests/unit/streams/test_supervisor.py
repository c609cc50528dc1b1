"""`interest-stream run`'s supervisor: both workers live and die together."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from streams.supervisor import supervise

PY = sys.executable


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text() if Path(f"/proc/{pid}").exists() else ""
    return bool(stat) and stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_failing_worker_stops_the_other_and_sets_the_status() -> None:
    started = time.monotonic()
    code = supervise(
        {
            "ok": [PY, "-c", "import time; time.sleep(60)"],
            "bad": [PY, "-c", "import sys, time; time.sleep(0.5); sys.exit(3)"],
        },
        grace_s=10,
    )
    assert code == 3
    assert time.monotonic() - started < 20


def run_supervisor(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    pids = tmp_path / "pids"
    child = (
        f"import os, time; open({str(pids)!r}, 'a').write(str(os.getpid()) + ' '); time.sleep(120)"
    )
    script = textwrap.dedent(
        f"""
        import sys
        from streams.supervisor import supervise
        worker = [sys.executable, "-c", {child!r}]
        sys.exit(supervise({{"a": worker, "b": worker}}))
        """
    )
    proc = subprocess.Popen([PY, "-c", script], text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if pids.exists() and len(pids.read_text().split()) == 2:
            break
        time.sleep(0.1)
    return proc, [int(p) for p in pids.read_text().split()]


def test_sigterm_stops_both_workers_cleanly(tmp_path: Path) -> None:
    proc, children = run_supervisor(tmp_path)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert not any(alive(p) for p in children)


def test_killed_supervisor_leaves_no_orphan_workers(tmp_path: Path) -> None:
    proc, children = run_supervisor(tmp_path)
    assert all(alive(p) for p in children)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(alive(p) for p in children):
        time.sleep(0.1)
    assert not any(alive(p) for p in children)
