"""What the benchmarks share to run a worker as its own process: a free port, the worker's
environment on the bench's broker and topics, and the process with its HTTP port
(``/healthz``, ``/metrics``) and its log."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from streams.settings import KafkaSettings, TopicSettings

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a worker's API or metrics server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def worker_env(kafka: KafkaSettings, topics: TopicSettings, **extra: str) -> dict[str, str]:
    """A worker's environment: the bench's broker and topics, this checkout importable,
    offline model loading, the embedded store (no ``INTEREST_QDRANT_URL``), plus ``extra``."""
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


class HttpProcess:
    """A worker process serving ``/healthz`` and ``/metrics`` on ``port``, its output in
    ``<work>/<name>.log``."""

    def __init__(
        self, name: str, command: Sequence[str], env: Mapping[str, str], port: int, work: Path
    ) -> None:
        self.name, self.port = name, port
        self.log_path = work / f"{name}.log"
        self.log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            list(command), env=dict(env), cwd=ROOT, stdout=self.log, stderr=self.log
        )

    def get(self, path: str, timeout: float = 5.0) -> bytes:
        """The body of ``GET path`` on the worker's HTTP port."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=timeout) as r:
            body: bytes = r.read()
            return body

    def wait_ready(self, timeout_s: float) -> float:
        """Seconds until ``/healthz`` says consuming (model loaded, store open, group joined)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            self.check_alive()
            try:
                if json.loads(self.get("/healthz")).get("consuming"):
                    return time.monotonic() - t0
            except (OSError, ValueError):
                pass
            time.sleep(0.5)
        raise SystemExit(
            f"the {self.name} worker did not come up in {timeout_s:.0f} s; see {self.log_path}"
        )

    def check_alive(self) -> None:
        """Fail the run with the log's tail if the worker has exited."""
        if self.proc.poll() is not None:
            tail = self.log_path.read_text(errors="replace")[-2000:]
            raise SystemExit(f"the {self.name} worker exited ({self.proc.returncode}):\n{tail}")
