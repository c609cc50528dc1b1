"""Secured Kafka for real: a local SASL_SSL broker (SCRAM-SHA-512, TLS from a CA the project
generates) and the whole pipeline through it (publish -> stream worker -> embed worker ->
profile, and lag); a wrong password, an unknown user and an untrusted CA each end a CLI command
with one line within seconds, and no secret shows in what the commands print."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_testing import free_port

from models.config import CoreSettings
from streams.broker import LocalBroker, make_ca_and_cert
from streams.settings import BrokerSettings

pytestmark = [pytest.mark.integration]

CLI = [sys.executable, "-m", "streams.cli"]
#: This test's own broker (never the shared test broker's port).
# Below the kernel's ephemeral range (32768-60999 here): a fixed port inside it can be taken by
# any outgoing connection of the suite at that moment (it was, once, in CI).
PORT = int(os.environ.get("INTEREST_TEST_SECURE_BROKER_PORT", "29220"))


@pytest.fixture(scope="module")
def secure_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed: the SASL_SSL broker's CA is made with it")
    data = tmp_path_factory.mktemp("secure-kafka")
    settings = BrokerSettings(port=PORT, controller_port=PORT + 1, security="sasl_ssl")
    broker = LocalBroker(settings, CoreSettings(data_dir=data))
    broker.start()
    yield broker
    broker.stop()


def client_env(broker: LocalBroker, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a CLI command that talks to ``broker`` (no INTEREST_KAFKA_* of the
    caller's leaks in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTEREST_KAFKA_")}
    return {**env, **broker.client_env(), "INTEREST_DATA_DIR": str(data_dir), **extra}


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=120
    )


def password(broker: LocalBroker) -> str:
    return broker.password_file(broker.settings.sasl_username).read_text().strip()


@pytest.mark.slow
def test_pipeline_and_lag_over_sasl_ssl(secure_broker: LocalBroker, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:8]
    env = client_env(
        secure_broker,
        tmp_path,
        INTEREST_TOPICS_EVENTS=f"sec-{run}.events",
        INTEREST_TOPICS_DLQ=f"sec-{run}.events.dlq",
        INTEREST_TOPICS_UPDATES=f"sec-{run}.updates",
        INTEREST_TOPICS_POPULARITY=f"sec-{run}.items.popularity",
        INTEREST_TOPICS_PARTITIONS="2",
        INTEREST_STREAM_APP_ID=f"sec-{run}",
        INTEREST_STREAM_REPARTITION_TOPIC=f"sec-{run}.repartition",
        INTEREST_STREAM_METRICS_PORT="0",
        INTEREST_EMBED_GROUP_ID=f"sec-{run}-embed",
        INTEREST_API_PORT=str(free_port()),
    )
    log_path = tmp_path / "run.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([*CLI, "run"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_consuming(proc, env["INTEREST_API_PORT"], log_path)
        now = int(time.time() * 1000)
        events = "\n".join(
            json.dumps({"event_id": f"e{i}", "user_id": "ann", "type": "like", "ts": now + i,
                        "item_id": f"dl-{i}", "tags": ["deep learning"]})
            for i in range(2)
        )  # fmt: skip
        published = cli(env, "publish", "-", stdin=events)
        assert published.returncode == 0, published.stderr
        view = wait_profile(env)
        assert view["found"] and view["recent_items"] == ["dl-0", "dl-1"]
        assert not any(password(secure_broker) in c for c in command_lines())  # not in `ps`
        lag = wait_no_lag(env, [f"sec-{run}", f"sec-{run}-embed"])
        assert {g["group"] for g in lag} == {f"sec-{run}", f"sec-{run}-embed"}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=90)
    for log_file in (log_path, secure_broker.log_path, secure_broker.stdout_path):
        assert password(secure_broker) not in log_file.read_text(errors="replace")


def wait_consuming(proc: subprocess.Popen[bytes], port: str, log: Path) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
                if json.loads(resp.read()).get("consuming"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail("service did not come up over SASL_SSL:\n" + log.read_text()[-3000:])


def wait_profile(env: dict[str, str]) -> dict[str, object]:
    deadline = time.monotonic() + 90
    view: dict[str, object] = {}
    while time.monotonic() < deadline:
        profile = cli(env, "profile", "ann", "--json")
        assert profile.returncode == 0, profile.stderr
        view = json.loads(profile.stdout)
        if view.get("seq") == 2:
            return view
        time.sleep(0.5)
    pytest.fail(f"the profile never saw both events: {view}")


def wait_no_lag(env: dict[str, str], groups: list[str]) -> list[dict[str, object]]:
    args = [a for g in groups for a in ("--group", g)]
    deadline = time.monotonic() + 60
    doc: dict[str, list[dict[str, object]]] = {"groups": []}
    while time.monotonic() < deadline:
        out = cli(env, "lag", *args, "--json")
        assert out.returncode == 0, out.stderr
        doc = json.loads(out.stdout)
        if all(g["lag_sum"] == 0 for g in doc["groups"]):
            return doc["groups"]
        time.sleep(1)
    pytest.fail(f"lag never reached 0 over SASL_SSL: {doc}")


def command_lines() -> list[str]:
    """Every process's command line, as `ps` shows them."""
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                lines.append((entry / "cmdline").read_bytes().decode(errors="replace"))
            except OSError:
                continue
    return lines


def refused(env: dict[str, str], secret: str) -> str:
    """Run `lag`; assert a one-line error within seconds that holds no secret; return it."""
    started = time.monotonic()
    out = cli(env, "lag")
    took = time.monotonic() - started
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), out.stderr
    assert took < 20, f"took {took:.1f} s"
    assert secret not in out.stderr + out.stdout
    return lines[0]


def test_wrong_password_is_one_line(secure_broker: LocalBroker, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not-the-password\n")
    env = client_env(secure_broker, tmp_path, INTEREST_KAFKA_SASL_PASSWORD_FILE=str(wrong))
    line = refused(env, "not-the-password")
    assert "SASL login of user 'interest'" in line and "refused" in line


def test_unknown_user_is_one_line(secure_broker: LocalBroker, tmp_path: Path) -> None:
    env = client_env(secure_broker, tmp_path, INTEREST_KAFKA_SASL_USERNAME="mallory")
    line = refused(env, password(secure_broker))
    assert "SASL login of user 'mallory'" in line and "refused" in line


def test_untrusted_ca_is_one_line(secure_broker: LocalBroker, tmp_path: Path) -> None:
    make_ca_and_cert(tmp_path / "other", "127.0.0.1")
    other_ca = tmp_path / "other" / "ca.pem"
    env = client_env(secure_broker, tmp_path, INTEREST_KAFKA_SSL_CAFILE=str(other_ca))
    line = refused(env, password(secure_broker))
    assert "TLS certificate is not trusted" in line and "INTEREST_KAFKA_SSL_CAFILE" in line


def test_password_in_the_environment_works_and_stays_out_of_errors(
    secure_broker: LocalBroker, tmp_path: Path
) -> None:
    secret = password(secure_broker)
    run = uuid.uuid4().hex[:8]
    env = client_env(
        secure_broker,
        tmp_path,
        INTEREST_KAFKA_SASL_PASSWORD=secret,
        INTEREST_TOPICS_EVENTS=f"env-{run}.events",
        INTEREST_TOPICS_DLQ=f"env-{run}.events.dlq",
        INTEREST_TOPICS_UPDATES=f"env-{run}.updates",
    )
    del env["INTEREST_KAFKA_SASL_PASSWORD_FILE"]
    event = json.dumps({"event_id": "e1", "user_id": "bob", "type": "view", "item_id": "i1",
                        "ts": int(time.time() * 1000)})  # fmt: skip
    ok = cli(env, "publish", "-", stdin=event)
    assert ok.returncode == 0 and ok.stdout.startswith("sent 1 event"), ok.stdout + ok.stderr
    env["INTEREST_KAFKA_SASL_PASSWORD"] = secret + "-wrong"
    refused(env, secret)
