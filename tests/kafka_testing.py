"""Small helpers for integration tests: read back what landed on a real topic; run a stream
worker process; a free port."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from streams.settings import KafkaSettings


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
