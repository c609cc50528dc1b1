"""`interest-stream run` as a new user meets it in a terminal: it says where everything is and
when the workers are up; a second `run` is refused before it joins any group; the API explains a
bad parameter; `lag` lists the topics a user knows; one Ctrl-C is one graceful stop that leaves
no member in any group.

One real `run` (stream worker, embed worker with the model, embedded Qdrant) for the module,
started as a terminal starts a foreground job (its own session: ``os.killpg(pid, SIGINT)`` is
the terminal's Ctrl-C). The stop test comes last."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from kafka_testing import run_env

from streams.lag import LagReader
from streams.lag_rules import GroupSample
from streams.settings import KafkaSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "streams.cli"]
START_TIMEOUT_S = 240


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    out: Path
    err: Path
    groups: list[str]
    api: str

    def stdout(self) -> str:
        return self.out.read_text()

    def logs(self) -> str:
        return f"stdout:\n{self.stdout()}\nstderr:\n{self.err.read_text()[-4000:]}"


def wait_for(service: Service, text: str, timeout_s: float) -> float:
    """Seconds until ``text`` is on the service's stdout (fails if it exits first)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if text in service.stdout():
            return time.monotonic() - started
        assert service.proc.poll() is None, service.logs()
        time.sleep(0.1)
    pytest.fail(f"{text!r} not printed in {timeout_s} s\n{service.logs()}")


@pytest.fixture(scope="module")
def service(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("first-hour")
    run = uuid.uuid4().hex[:8]
    env = run_env(kafka, folder, f"fh-{run}")
    api_port = env["INTEREST_API_PORT"]
    out, err = folder / "run.out", folder / "run.err"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        proc = subprocess.Popen(
            [*CLI, "run"], env=env, cwd=ROOT, stdout=stdout, stderr=stderr,
            stdin=subprocess.DEVNULL, start_new_session=True,  # a terminal's foreground job
        )  # fmt: skip
    started = Service(
        proc, env, out, err, [f"fh-{run}", f"fh-{run}-embed"], f"http://127.0.0.1:{api_port}"
    )
    yield started
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


def groups_now(service: Service, kafka: KafkaSettings) -> dict[str, GroupSample]:
    async def read() -> list[GroupSample]:
        async with LagReader(kafka) as reader:
            return await reader.read(service.groups)

    return {s.group: s for s in asyncio.run(read())}


def test_run_says_where_everything_is_then_when_the_workers_are_up(service: Service) -> None:
    # Printed before the workers start (imports only); "up" needs the model and both groups.
    wait_for(service, "starting a stream worker and an embed worker", 60)
    banner = service.stdout()
    assert f"consumer group {service.groups[0]}" in banner
    assert f"consumer group {service.groups[1]}" in banner
    assert f"embedded Qdrant in {service.env['INTEREST_QDRANT_PATH']}" in banner
    assert f"API      {service.api}" in banner
    wait_for(service, "workers up in", START_TIMEOUT_S)
    up = next(ln for ln in service.stdout().splitlines() if ln.startswith("workers up in"))
    assert f"API at {service.api}" in up
    with urllib.request.urlopen(f"{service.api}/healthz", timeout=10) as resp:
        assert json.loads(resp.read())["consuming"] is True


def test_a_second_run_is_refused_before_it_joins_any_group(
    service: Service, kafka: KafkaSettings
) -> None:
    wait_for(service, "workers up in", START_TIMEOUT_S)
    second = subprocess.run(
        [*CLI, "run"], env=service.env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert second.returncode == 1
    assert second.stdout == ""  # no banner: nothing was started
    assert second.stderr.startswith(
        f"error: another `interest-stream run` (pid {service.proc.pid}) is already running"
    )
    assert f"API at {service.api}" in second.stderr
    members = {g: s.members for g, s in groups_now(service, kafka).items()}
    assert members == dict.fromkeys(service.groups, 1)  # nobody joined: no rebalance


def test_a_bad_api_parameter_is_a_400_with_the_reason(service: Service) -> None:
    wait_for(service, "workers up in", START_TIMEOUT_S)
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(f"{service.api}/v1/users/u1/recommendations?limit=abc", timeout=30)
    assert info.value.code == 400
    assert json.loads(info.value.read()) == {
        "error": "limit must be a whole number from 1 to 1000, got 'abc'"
    }


def lag_json(service: Service, *extra: str) -> dict[str, dict[str, object]]:
    args = [arg for g in service.groups for arg in ("--group", g)]
    done = subprocess.run(
        [*CLI, "lag", "--json", *args, *extra],
        env=service.env, cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return {g["group"]: g for g in json.loads(done.stdout)["groups"]}


def topics_of(group: dict[str, object]) -> set[str]:
    partitions = group["partitions"]
    assert isinstance(partitions, list)
    return {p["topic"] for p in partitions}


def test_lag_lists_the_topics_a_user_knows_unless_all(service: Service) -> None:
    wait_for(service, "workers up in", START_TIMEOUT_S)
    stream, embed = service.groups
    env = service.env
    shown = lag_json(service)
    assert topics_of(shown[stream]) == {env["INTEREST_TOPICS_EVENTS"]}
    assert topics_of(shown[embed]) == {
        env["INTEREST_TOPICS_UPDATES"],
        env["INTEREST_TOPICS_POPULARITY"],
    }
    hidden = shown[stream]["hidden_partitions"]
    assert isinstance(hidden, int) and hidden > 0
    everything = lag_json(service, "--all")
    internal = topics_of(everything[stream]) - {env["INTEREST_TOPICS_EVENTS"]}
    assert any(t.endswith("-changelog") for t in internal)
    assert env["INTEREST_STREAM_REPARTITION_TOPIC"] in internal
    assert everything[stream]["hidden_partitions"] == 0


def test_one_ctrl_c_is_one_graceful_stop(service: Service, kafka: KafkaSettings) -> None:
    wait_for(service, "workers up in", START_TIMEOUT_S)
    os.killpg(service.proc.pid, signal.SIGINT)  # the terminal's Ctrl-C
    assert service.proc.wait(timeout=90) == 0, service.logs()
    out = service.stdout()
    assert "SIGINT: stopping the workers" in out
    assert out.rstrip().endswith("workers stopped cleanly")
    errors = service.err.read_text()
    assert "second signal" not in errors and "exiting now" not in errors
    for sample in groups_now(service, kafka).values():
        assert sample.members == 0, sample  # each consumer left its group
