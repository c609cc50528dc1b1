"""`lag --watch` in a terminal redraws one table in place (as `watch` does) instead of printing
a new one per sample; into a pipe it still appends, one timed sample after another. And `lag`
finds the local broker from its port alone. Real CLI processes, the real broker."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from streams.settings import BrokerSettings, KafkaSettings

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "streams.cli"]
HOME, CLEAR = "\x1b[H", "\x1b[2J"


def env_for(kafka: KafkaSettings) -> dict[str, str]:
    return {**os.environ, "INTEREST_KAFKA_BOOTSTRAP": kafka.bootstrap}


def test_watch_redraws_in_place_in_a_terminal(kafka: KafkaSettings) -> None:
    group = f"nobody-{uuid.uuid4().hex[:8]}"
    main, child = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "lag", "--group", group, "--watch", "0.2", "--count", "3"],
        env=env_for(kafka), cwd=ROOT, stdout=child, stderr=child, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    os.close(child)
    chunks = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            data = os.read(main, 65536)
        except OSError:  # the terminal's other side closed: the command ended
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert proc.wait(timeout=30) == 0
    screen = b"".join(chunks).decode()
    assert screen.count(HOME) == 3  # each sample drawn over the last
    assert screen.count(CLEAR) == 1  # the screen is cleared once, not scrolled
    assert screen.count(f"{group}: unknown") == 3
    assert "--- " not in screen


def test_watch_into_a_pipe_appends_samples(kafka: KafkaSettings) -> None:
    group = f"nobody-{uuid.uuid4().hex[:8]}"
    done = subprocess.run(
        [*CLI, "lag", "--group", group, "--watch", "0.2", "--count", "2"],
        env=env_for(kafka), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "\x1b" not in done.stdout
    assert len([ln for ln in done.stdout.splitlines() if ln.startswith("--- ")]) == 2


def test_lag_finds_the_local_broker_from_its_port_alone(kafka: KafkaSettings) -> None:
    broker = BrokerSettings()
    if kafka.bootstrap != broker.bootstrap:
        pytest.skip(f"the tests' Kafka ({kafka.bootstrap}) is not the local broker")
    env = {k: v for k, v in os.environ.items() if k != "INTEREST_KAFKA_BOOTSTRAP"}
    env["INTEREST_BROKER_PORT"] = str(broker.port)
    done = subprocess.run(
        [*CLI, "lag", "--group", "nobody", "--json"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr  # not "cannot reach Kafka at 127.0.0.1:9092"
