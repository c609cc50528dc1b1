"""The local broker as a user drives it: `interest-stream broker start|stop|status`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from models.config import CoreSettings
from streams.broker import BrokerError, LocalBroker, require_java
from streams.settings import BrokerSettings, KafkaSettings

pytestmark = pytest.mark.integration

CLI = [sys.executable, "-m", "streams.cli"]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=180,
    )


def java_pids_for(props: Path) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if "kafka.Kafka" in cmd and str(props) in cmd:
                pids.append(int(entry.name))
    return pids


def test_start_is_idempotent_on_a_running_broker(kafka: KafkaSettings) -> None:
    first = cli("broker", "start", "--json")
    second = cli("broker", "start", "--json")
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a, b = json.loads(first.stdout), json.loads(second.stdout)
    assert a["running"] and a["pid"] == b["pid"]
    assert a["bootstrap"] == kafka.bootstrap

    status = cli("broker", "status", "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout)["pid"] == a["pid"]


def test_full_lifecycle_leaves_no_java_process(tmp_path: Path, kafka: KafkaSettings) -> None:
    env = {"INTEREST_DATA_DIR": str(tmp_path), "INTEREST_BROKER_PORT": "29192"}
    props = tmp_path / "kafka" / "server.properties"
    try:
        down = cli("broker", "status", env=env)
        assert down.returncode == 3 and "not running" in down.stdout

        started = cli("broker", "start", env=env)
        assert started.returncode == 0, started.stderr
        assert "running" in started.stdout and "127.0.0.1:29192" in started.stdout
        assert len(java_pids_for(props)) == 1
        again = cli("broker", "start", env=env)
        assert again.returncode == 0 and java_pids_for(props)

        stopped = cli("broker", "stop", env=env)
        assert stopped.returncode == 0 and "stopped" in stopped.stdout
        assert java_pids_for(props) == []
        assert cli("broker", "status", env=env).returncode == 3

        # Storage was formatted once and is reused: a restart keeps the cluster id.
        cluster_id = (tmp_path / "kafka" / "cluster.id").read_text()
        assert cli("broker", "start", env=env).returncode == 0
        assert (tmp_path / "kafka" / "cluster.id").read_text() == cluster_id
    finally:
        cli("broker", "stop", env=env)
    assert java_pids_for(props) == []


def test_port_taken_by_another_program_is_a_clear_error(
    tmp_path: Path, kafka: KafkaSettings
) -> None:
    port = kafka.bootstrap.rsplit(":", 1)[1]
    out = cli(
        "broker", "start", env={"INTEREST_DATA_DIR": str(tmp_path), "INTEREST_BROKER_PORT": port}
    )
    assert out.returncode == 1
    assert out.stderr.startswith(f"error: port {port} on 127.0.0.1 is taken by another program")


def test_missing_java_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(BrokerError, match="apt-get install openjdk-17-jre-headless"):
        require_java()


def test_broker_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    broker = LocalBroker(
        BrokerSettings(port=29292, heap="1k", start_timeout_s=30), CoreSettings(data_dir=tmp_path)
    )
    try:
        with pytest.raises(BrokerError) as info:
            broker.start()
        assert "log tail" in str(info.value)
    finally:
        broker.stop()
