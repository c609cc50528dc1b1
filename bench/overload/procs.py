"""The bench's processes: its own broker and the two workers, run exactly as deployed.

Each worker is ``python -m streams.cli stream|embed`` (the console script's module, so the bench
needs no installed script) with the bench's topics, group, store folder and HTTP port in its
environment; the bench reads its ``/healthz``, ``/metrics`` and ``/proc/PID/status``.
"""

from __future__ import annotations

import argparse
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

from bench.freshness import prometheus_samples
from bench.overload.series import ALERT_SERIES, REPORT_SERIES
from bench.processes import HttpProcess


class Worker(HttpProcess):
    """One ``interest-stream stream|embed`` process with its HTTP port (``/metrics``,
    ``/healthz``); the console script's module is run so the bench needs no installed script."""

    def __init__(self, kind: str, env: Mapping[str, str], port: int, work: Path) -> None:
        super().__init__(kind, [sys.executable, "-m", "streams.cli", kind], env, port, work)
        self.kind = kind

    def scrape(self) -> dict[str, float] | None:
        """The kept samples of ``/metrics``, or None when the scrape fails (``up`` = 0)."""
        try:
            text = self.get("/metrics", timeout=5.0).decode()
        except OSError:
            return None
        keep = ALERT_SERIES + REPORT_SERIES
        return {k: v for k, v in prometheus_samples(text).items() if k.split("{")[0] in keep}

    def memory_mb(self) -> tuple[float, float]:
        """(RSS, peak RSS) in MiB from ``/proc/PID/status``; NaN once the process is gone."""
        try:
            lines = Path(f"/proc/{self.proc.pid}/status").read_text().splitlines()
        except OSError:
            return math.nan, math.nan
        kb = {ln.split(":")[0]: int(ln.split()[1]) for ln in lines if ln.startswith("Vm")}
        return kb.get("VmRSS", 0) / 1024, kb.get("VmHWM", 0) / 1024

    def stop(self) -> int | None:
        """SIGTERM and wait up to 60 s (then SIGKILL); returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def start_broker(args: argparse.Namespace, work: Path) -> Callable[[], None]:
    """The bench's own broker (or none with ``--bootstrap``); returns how to stop it."""
    if args.bootstrap:
        os.environ["INTEREST_KAFKA_BOOTSTRAP"] = args.bootstrap
        return lambda: None
    from models.config import CoreSettings
    from streams.broker import LocalBroker
    from streams.settings import BrokerSettings

    os.environ["INTEREST_BROKER_PORT"] = str(args.broker_port)
    os.environ["INTEREST_DATA_DIR"] = str(work / "data")
    os.environ.pop("INTEREST_KAFKA_BOOTSTRAP", None)
    broker = LocalBroker(BrokerSettings(), CoreSettings())
    print(f"starting a broker on port {args.broker_port} ...", flush=True)
    broker.start()

    def stop() -> None:
        broker.stop()

    return stop
