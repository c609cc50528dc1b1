"""`interest-stream demo` leaves nothing running that it started: a newcomer's `make demo` must
not leave a Java broker on the machine. Its own broker (a fresh data dir, ports nobody else uses),
so the shared test broker stays untouched -- that one the demo reuses and must never stop
(tests/integration/test_service.py runs the demo against it)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from kafka_testing import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [sys.executable, "-m", "streams.cli"]


def listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_demo_stops_the_broker_it_started(tmp_path: Path) -> None:
    port, controller = free_port(), free_port()
    env = {
        **os.environ,
        "INTEREST_DATA_DIR": str(tmp_path),
        "INTEREST_BROKER_PORT": str(port),
        "INTEREST_BROKER_CONTROLLER_PORT": str(controller),
        "INTEREST_KAFKA_BOOTSTRAP": f"127.0.0.1:{port}",
    }
    try:
        out = subprocess.run(
            [*CLI, "demo", "--fast"], env=env, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert "starting the local Kafka broker" in out.stdout
        assert "stopped the Kafka broker this demo started" in out.stdout
        status = subprocess.run(
            [*CLI, "broker", "status"], env=env, capture_output=True, text=True, timeout=60
        )
        assert status.returncode == 3, status.stdout + status.stderr  # 3: not running
        assert not listening(port) and not listening(controller)
    finally:
        subprocess.run([*CLI, "broker", "stop"], env=env, capture_output=True, timeout=120)
