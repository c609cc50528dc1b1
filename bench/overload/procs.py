"""The bench's processes: its own broker and the two workers, run exactly as deployed.

Each worker is ``python -m streams.cli stream|embed`` (the console script's module, so the bench
needs no installed script) with the bench's topics, group, store folder and HTTP port in its
environment; the bench reads its ``/healthz``, ``/metrics`` and ``/proc/PID/status``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

from bench.freshness import prometheus_samples
from bench.overload.series import ALERT_SERIES, REPORT_SERIES
from streams.settings import KafkaSettings, TopicSettings

ROOT = Path(__file__).resolve().parents[2]


class Worker:
    """One ``interest-stream stream|embed`` process with its HTTP port (``/metrics``,
    ``/healthz``); the console script's module is run so the bench needs no installed script."""

    def __init__(self, kind: str, env: Mapping[str, str], port: int, work: Path) -> None:
        self.kind, self.port = kind, port
        self.log_path = work / f"{kind}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", kind],
            env=dict(env),
            cwd=ROOT,
            stdout=self.log,
            stderr=self.log,
        )

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        """The body of ``GET path`` on the worker's HTTP port."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            body: bytes = r.read()
            return body

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until ``/healthz`` says consuming."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            self.check_alive()
            try:
                if json.loads(self.get("/healthz")).get("consuming"):
                    return time.monotonic() - t0
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        raise SystemExit(f"the {self.kind} worker did not come up in {timeout_s:.0f} s")

    def check_alive(self) -> None:
        """Fail the run with the log's tail if the worker has exited."""
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"the {self.kind} worker exited ({self.proc.returncode}):\n{tail}")

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


def child_env(kafka: KafkaSettings, topics: TopicSettings, **extra: str) -> dict[str, str]:
    """A worker's environment: the bench's broker and topics, offline model loading,
    the embedded store (no ``INTEREST_QDRANT_URL``), plus ``extra``."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
        "INTEREST_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "INTEREST_TOPICS_EVENTS": topics.events,
        "INTEREST_TOPICS_DLQ": topics.dlq,
        "INTEREST_TOPICS_UPDATES": topics.updates,
        "INTEREST_TOPICS_POPULARITY": topics.popularity,
        "INTEREST_TOPICS_PARTITIONS": str(topics.partitions),
        "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
        "TRANSFORMERS_OFFLINE": os.environ.get("TRANSFORMERS_OFFLINE", "1"),
        **extra,
    }
    env.pop("INTEREST_QDRANT_URL", None)  # the default deployment: the embedded store
    return env


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
