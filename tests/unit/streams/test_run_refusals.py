"""A ``run`` that cannot work is refused at once, before any worker starts (so before anything
joins a consumer group): another ``run`` on the same embedded store, a store folder another
process holds, an API port already taken. Real CLI processes; the Kafka address points at a port
where nothing listens, so a ``run`` that went as far as starting workers could not pass for a
refusal."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import EdgeStoreFactory
from kafka_testing import free_port

from streams.service import RunLock, RunPlan

ROOT = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "streams.cli"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    values = {
        "INTEREST_DATA_DIR": str(tmp_path / "data"),
        "INTEREST_QDRANT_PATH": str(tmp_path / "qdrant"),
        "INTEREST_KAFKA_BOOTSTRAP": "127.0.0.1:9",  # nothing there
        "INTEREST_API_PORT": str(free_port()),
        "INTEREST_STREAM_METRICS_PORT": "0",
    }
    for name in ("INTEREST_QDRANT_URL", "INTEREST_CONFIG_FILE"):
        monkeypatch.delenv(name, raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **values}


def run_cli(env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    done = subprocess.run(
        [*CLI, "run"], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    return done, time.monotonic() - started


def assert_refused(done: subprocess.CompletedProcess[str], seconds: float) -> str:
    """Exit 1, one ``error:`` line, nothing started (no banner, no worker output)."""
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stdout == ""  # the banner comes only after the checks
    assert done.stderr.startswith("error: ") and len(done.stderr.splitlines()) == 1, done.stderr
    # A whole CLI start (imports included) on a loaded machine; the checks themselves are
    # milliseconds. Workers would need the model and Kafka: many seconds, then a different error.
    assert seconds < 15
    return done.stderr


@pytest.fixture
def first_run(env: dict[str, str]) -> Iterator[RunLock]:
    """The lock a running ``run`` holds (the same code ``run`` takes it with), held here."""
    lock = RunLock(Path(env["INTEREST_QDRANT_PATH"]))
    lock.acquire(RunPlan.from_settings())
    yield lock
    lock.release()


def test_a_second_run_on_the_same_store_is_refused_naming_the_first(
    env: dict[str, str], first_run: RunLock
) -> None:
    message = assert_refused(*run_cli(env))
    assert f"another `interest-stream run` (pid {os.getpid()}) is already running" in message
    assert env["INTEREST_QDRANT_PATH"] in message
    assert f"http://127.0.0.1:{env['INTEREST_API_PORT']}" in message  # where to go instead


def test_after_the_first_run_ends_the_store_is_free_again(
    env: dict[str, str], first_run: RunLock
) -> None:
    first_run.release()
    plan = RunPlan.from_settings()
    again = RunLock(plan.qdrant_path)
    again.acquire(plan)  # no RunRefused
    again.release()


def test_a_store_folder_held_by_another_process_is_refused(
    env: dict[str, str], edge_store: EdgeStoreFactory
) -> None:
    edge_store(8)  # opens and locks <tmp_path>/qdrant, as an `embed` or a reader would
    message = assert_refused(*run_cli(env))
    assert "in use by another process" in message and env["INTEREST_QDRANT_PATH"] in message


def test_a_taken_api_port_is_refused_before_the_model_loads(env: dict[str, str]) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", int(env["INTEREST_API_PORT"])))
        other.listen()
        message = assert_refused(*run_cli(env))
    assert f"port {env['INTEREST_API_PORT']} on 127.0.0.1 is taken by another program" in message
    assert "INTEREST_API_PORT" in message
