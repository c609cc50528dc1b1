"""Small helpers for integration tests: read back what landed on a real topic; run a stream
worker process, or a whole `interest-stream run` of its own; a free port."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from streams.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a worker's API or metrics server)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]


async def read_topic(
    kafka: KafkaSettings, topic: str, *, expect: int, timeout_s: float = 20.0
) -> list[Record]:
    """Read a topic from the beginning until ``expect`` records arrived (or the timeout)."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka.bootstrap,
        group_id=f"test-reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    out: list[Record] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                out.extend(
                    Record(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers))
                    for r in records
                )
        # Anything beyond ``expect`` would be a bug worth seeing: take one more short look.
        for records in (await consumer.getmany(timeout_ms=300)).values():
            out.extend(
                Record(r.topic, r.partition, r.offset, r.key, r.value, tuple(r.headers))
                for r in records
            )
    finally:
        await consumer.stop()
    return out


def read_topic_sync(
    kafka: KafkaSettings, topic: str, *, expect: int, timeout_s: float = 20.0
) -> list[Record]:
    return asyncio.run(read_topic(kafka, topic, expect=expect, timeout_s=timeout_s))


class StreamWorkerProcess:
    """One stream worker process (``python -m streams.stream.app``, as ``interest-stream stream``
    runs it), its output appended to ``log``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.stream.app"],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self) -> int:
        """SIGTERM (a graceful stop); the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.kill()
        self.log.close()


def run_env(
    kafka: KafkaSettings,
    folder: Path,
    name: str,
    inherit: Mapping[str, str] = os.environ,
    **overrides: str,
) -> dict[str, str]:
    """The environment of an `interest-stream run` of its own: topics, consumer groups and stream
    app named after ``name``, its store and stream state under ``folder``, free ports for its API
    and metrics, the embedded store; ``inherit`` (default: this process's environment) below,
    ``overrides`` on top."""
    env = {
        **inherit,
        "INTEREST_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "INTEREST_QDRANT_PATH": str(folder / "qdrant"),
        "INTEREST_TOPICS_EVENTS": f"{name}.events",
        "INTEREST_TOPICS_DLQ": f"{name}.events.dlq",
        "INTEREST_TOPICS_UPDATES": f"{name}.updates",
        "INTEREST_TOPICS_POPULARITY": f"{name}.items.popularity",
        "INTEREST_TOPICS_PARTITIONS": "2",
        "INTEREST_STREAM_APP_ID": name,
        "INTEREST_STREAM_REPARTITION_TOPIC": f"{name}.repartition",
        "INTEREST_STREAM_DATA_DIR": str(folder / "stream"),
        "INTEREST_STREAM_METRICS_PORT": str(free_port()),
        "INTEREST_EMBED_GROUP_ID": f"{name}-embed",
        "INTEREST_API_PORT": str(free_port()),
        **overrides,
    }
    env.pop("INTEREST_QDRANT_URL", None)
    return env


@dataclass
class RunProcess:
    """`interest-stream run` in its own session (``os.killpg`` is a terminal's Ctrl-C), its
    stdout and stderr in ``out``."""

    proc: subprocess.Popen[bytes]
    out: Path

    @classmethod
    def start(cls, env: Mapping[str, str], out: Path, timeout_s: float = 240) -> RunProcess:
        """Start it and return once it printed "workers up in" (fails if it exits first)."""
        with out.open("wb") as stdout:
            proc = subprocess.Popen(
                [sys.executable, "-m", "streams.cli", "run"], env=dict(env), cwd=ROOT,
                stdout=stdout, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        run = cls(proc, out)
        deadline = time.monotonic() + timeout_s
        while "workers up in" not in out.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, run.logs()
            time.sleep(0.2)
        return run

    def logs(self) -> str:
        return self.out.read_text(errors="replace")[-4000:]

    def stop(self, timeout_s: float = 90) -> int:
        """One Ctrl-C (a graceful stop); SIGKILL if it is not done in ``timeout_s``. The exit
        code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                return self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        return self.proc.returncode
