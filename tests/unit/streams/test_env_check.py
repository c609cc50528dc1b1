"""Settings a user gets wrong are reported, not ignored: a misspelt ``INTEREST_*`` variable is a
warning naming the closest setting, and the local broker's port is one setting that the broker
and every client follow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from settings_names import setting_names as names_of_every_settings_class

from streams.env_check import setting_names, unknown_variables, warnings_for
from streams.settings import BrokerSettings, KafkaSettings

ROOT = Path(__file__).resolve().parents[3]
CLI = [sys.executable, "-m", "streams.cli"]


@pytest.fixture
def clean_env(tmp_path: Path) -> dict[str, str]:
    """The test's environment without INTEREST_* variables (the data dir aside)."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("INTEREST_")}
    env["INTEREST_DATA_DIR"] = str(tmp_path)
    return env


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_misspelt_variable_is_a_warning_with_the_right_name(clean_env: dict[str, str]) -> None:
    env = {**clean_env, "INTEREST_BROKR_PORT": "19092"}
    done = cli(env, "broker", "status")
    assert done.returncode == 3  # not running: the command itself works as before
    assert done.stderr.splitlines() == [
        "warning: INTEREST_BROKR_PORT is not a setting of interest-stream and is ignored; "
        "did you mean INTEREST_BROKER_PORT?"
    ]
    assert "127.0.0.1:9092" in done.stdout  # the misspelt port was indeed not used


def test_ml_side_settings_are_known_and_misspelt_ones_found(clean_env: dict[str, str]) -> None:
    env = {**clean_env, "INTEREST_MODEL_NAME": "x", "INTEREST_QDRANT_URLL": "http://q:6333"}
    done = cli(env, "broker", "status")
    assert done.stderr.splitlines() == [
        "warning: INTEREST_QDRANT_URLL is not a setting of interest-stream and is ignored; "
        "did you mean INTEREST_QDRANT_URL?"
    ]


def test_known_and_tool_variables_are_quiet(clean_env: dict[str, str]) -> None:
    env = {
        **clean_env,
        "INTEREST_BROKER_PORT": "19092",
        "INTEREST_LOG_LEVEL": "warning",
        "INTEREST_TEST_BROKER_PORT": "29092",  # scripts/test.sh's
        "INTEREST_VENV": "/opt/venv",  # scripts/install.sh's
        "INTEREST_STREAM_FLUSH_COUNT": "8",
        "INTEREST_RECOMMEND_CENTERING": "0.5",
    }
    done = cli(env, "broker", "status")
    assert done.stderr == ""


def test_every_setting_is_known() -> None:
    """The CLI's check knows every variable a settings class reads (the test helper that checks
    the deploy files finds them by importing every settings module)."""
    assert unknown_variables(dict.fromkeys(names_of_every_settings_class(), "1")) == []
    assert names_of_every_settings_class() <= setting_names()


def test_an_unrelated_name_gets_no_suggestion() -> None:
    assert warnings_for({"INTEREST_ZZZZZZZZ": "1"}) == [
        "warning: INTEREST_ZZZZZZZZ is not a setting of interest-stream and is ignored"
    ]


def test_clients_follow_the_local_brokers_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("INTEREST_KAFKA_BOOTSTRAP", raising=False)
    monkeypatch.setenv("INTEREST_BROKER_PORT", "39999")
    assert BrokerSettings().bootstrap == "127.0.0.1:39999"
    assert KafkaSettings().bootstrap == "127.0.0.1:39999"
    monkeypatch.setenv("INTEREST_KAFKA_BOOTSTRAP", "kafka-1:9092,kafka-2:9092")
    assert KafkaSettings().bootstrap == "kafka-1:9092,kafka-2:9092"  # another cluster wins
