"""The chaos run's processes: its own broker, one stream worker, one embed worker.

Everything runs as the CLI runs it (``interest-stream broker start``, ``interest-stream stream``,
``interest-stream embed``), each a separate process with the run's own environment: its broker
port and data dir, its topics, groups, store folder and API port, so a chaos run never touches
the shared test broker or a user's data. A worker is killed with SIGKILL (no shutdown code runs)
and started again at once; the broker is stopped gracefully and started again on the same data.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from streams.settings import TopicSettings

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class RunPaths:
    """Where one run keeps its data; all of it under ``root``."""

    root: Path

    @property
    def qdrant(self) -> Path:
        return self.root / "qdrant"

    @property
    def fault_file(self) -> Path:
        return self.root / "store-down"

    @property
    def logs(self) -> Path:
        return self.root / "logs"


def run_env(
    paths: RunPaths, broker_port: int, api_port: int, topics: TopicSettings, run_id: str
) -> dict[str, str]:
    """The environment of every process of the run: nothing inherited from ``INTEREST_*``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEREST_")}
    # The processes run this checkout's code, whatever checkout the venv was installed from.
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.update({
        "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
        "INTEREST_DATA_DIR": str(paths.root / "data"),
        "INTEREST_BROKER_PORT": str(broker_port),
        "INTEREST_KAFKA_BOOTSTRAP": f"127.0.0.1:{broker_port}",
        "INTEREST_TOPICS_EVENTS": topics.events, "INTEREST_TOPICS_DLQ": topics.dlq,
        "INTEREST_TOPICS_UPDATES": topics.updates,
        "INTEREST_TOPICS_POPULARITY": topics.popularity,
        "INTEREST_TOPICS_PARTITIONS": str(topics.partitions),
        "INTEREST_STREAM_APP_ID": f"chaos-stream-{run_id}",
        "INTEREST_STREAM_REPARTITION_TOPIC": f"{topics.events}.repartition",
        "INTEREST_STREAM_SESSION_TIMEOUT_S": "6",
        "INTEREST_STREAM_DATA_DIR": str(paths.root / "stream"),
        "INTEREST_STREAM_METRICS_PORT": "0",
        "INTEREST_STREAM_LOGLEVEL": "info",
        "INTEREST_EMBED_GROUP_ID": f"chaos-embed-{run_id}",
        "INTEREST_EMBED_RETRY_INITIAL_S": "0.5", "INTEREST_EMBED_RETRY_MAX_S": "4",
        "INTEREST_QDRANT_PATH": str(paths.qdrant),
        "INTEREST_QDRANT_FAULT_FILE": str(paths.fault_file),
        "INTEREST_API_PORT": str(api_port),
    })  # fmt: skip
    return env


def cli(env: dict[str, str], *args: str, timeout_s: float = 180) -> str:
    """Run ``interest-stream ARGS`` to the end; its output, or RuntimeError with it."""
    done = subprocess.run(
        [str(BIN / "interest-stream"), *args], env=env, capture_output=True, text=True,
        timeout=timeout_s, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"interest-stream {' '.join(args)}: {done.stdout}{done.stderr}")
    return done.stdout.strip()


@dataclass
class Worker:
    """One kind of worker (``stream`` or ``embed``): the live process, restarted after kills."""

    kind: str
    env: dict[str, str]
    logs: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    kills: list[float] = field(default_factory=list)

    def start(self) -> None:
        self.starts += 1
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{self.kind}-{self.starts}.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "interest-stream"), self.kind], env=self.env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self, at: float) -> None:
        """SIGKILL now (if it is still running), then start a fresh process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
        self.kills.append(at)
        self.start()

    def stop(self, timeout_s: float = 120) -> int | None:
        """SIGTERM (a graceful stop) and wait; SIGKILL if it does not end in time."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGKILL)
            return self.proc.wait(timeout=30)


class Broker:
    """The run's own local broker, through the CLI."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.restarts: list[dict[str, float]] = []

    def start(self) -> None:
        cli(self.env, "broker", "start")

    def stop(self) -> None:
        cli(self.env, "broker", "stop")

    def restart(self, at: float) -> None:
        """Stop, then start again on the same data; records how long it was away."""
        t0 = time.monotonic()
        self.stop()
        stopped = time.monotonic()
        self.start()
        self.restarts.append({
            "at_s": round(at, 1), "stop_s": round(stopped - t0, 1),
            "down_s": round(time.monotonic() - t0, 1),
        })  # fmt: skip
