"""The product from the user's seat: `run` in one terminal, `profile`/`recommend`/`items load`
in another (the CLI goes through the running service's API while it holds the embedded store),
and the whole `demo`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kafka_testing import free_port

from streams.settings import KafkaSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [sys.executable, "-m", "streams.cli"]


@pytest.fixture
def service_env(tmp_path: Path, kafka: KafkaSettings) -> dict[str, str]:
    run = uuid.uuid4().hex[:8]
    return {
        **os.environ,
        "INTEREST_DATA_DIR": str(tmp_path),
        "INTEREST_TOPICS_EVENTS": f"svc-{run}.events",
        "INTEREST_TOPICS_DLQ": f"svc-{run}.events.dlq",
        "INTEREST_TOPICS_UPDATES": f"svc-{run}.updates",
        "INTEREST_TOPICS_POPULARITY": f"svc-{run}.items.popularity",
        "INTEREST_TOPICS_PARTITIONS": "2",
        "INTEREST_STREAM_APP_ID": f"svc-{run}",
        "INTEREST_STREAM_REPARTITION_TOPIC": f"svc-{run}.repartition",
        "INTEREST_STREAM_METRICS_PORT": "0",  # never clash with a running service
        "INTEREST_EMBED_GROUP_ID": f"svc-{run}-embed",
        "INTEREST_API_PORT": str(free_port()),
    }


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=180
    )


@pytest.fixture
def running_service(
    service_env: dict[str, str], tmp_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / "run.log").open("wb")
    proc = subprocess.Popen([*CLI, "run"], env=service_env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    url = f"http://127.0.0.1:{service_env['INTEREST_API_PORT']}/healthz"
    import urllib.request

    while time.monotonic() < deadline:
        assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if json.loads(resp.read()).get("consuming"):
                    break
        except OSError:
            pass
        time.sleep(0.5)
    else:
        pytest.fail("service did not come up:\n" + (tmp_path / "run.log").read_text()[-3000:])
    yield proc
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0, (tmp_path / "run.log").read_text()[-3000:]


def test_cli_works_next_to_a_running_service(
    service_env: dict[str, str], running_service: subprocess.Popen[bytes]
) -> None:
    catalog = [
        ("dl-0", "neural networks for image recognition", "ml", 0),
        ("dl-1", "training deep learning models", "ml", 1),
        ("dl-2", "attention and transformers", "ml", 2),
        ("bake-0", "sourdough bread baking", "food", 10),
        ("bake-1", "chocolate cake recipe", "food", 11),
        ("bake-2", "butter croissants", "food", 12),
    ]
    tags = {"ml": ["deep learning"], "food": ["baking"]}
    items = "\n".join(
        json.dumps(
            {"id": i, "text": t, "payload": {"category": c, "tags": tags[c], "popularity": p}}
        )
        for i, t, c, p in catalog
    )
    loaded = cli(service_env, "items", "load", "-", "--json", stdin=items)
    assert loaded.returncode == 0, loaded.stderr
    assert json.loads(loaded.stdout) == {"loaded": 6}

    now = int(time.time() * 1000)
    events = "\n".join(
        json.dumps({"event_id": f"e{i}", "user_id": "ann", "type": "like", "ts": now - 1000 + i,
                    "item_id": f"dl-{i}", "tags": ["deep learning"]})
        for i in range(2)
    )  # fmt: skip
    assert cli(service_env, "publish", "-", stdin=events).returncode == 0

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        profile = cli(service_env, "profile", "ann", "--json")
        assert profile.returncode == 0, profile.stderr  # never a lock error
        view = json.loads(profile.stdout)
        if view.get("seq") == 2:
            break
        time.sleep(0.5)
    assert view["found"] and view["seq"] == 2
    assert view["profile"] == {"deep learning": 1.0}
    assert view["recent_items"] == ["dl-0", "dl-1"]

    rec = cli(service_env, "recommend", "ann", "--json", "--limit", "3")
    assert rec.returncode == 0, rec.stderr
    result = json.loads(rec.stdout)
    assert result["strategy"] == "personal"
    ids = [i["item_id"] for i in result["items"]]
    # The one deep-learning item ann has not seen, although the food items are more popular:
    # its tags are embedded with its text, so it is close to what she liked.
    assert ids[0] == "dl-2"
    assert not {"dl-0", "dl-1"} & set(ids)

    only_food = cli(service_env, "recommend", "ann", "--json", "--filter", "category=food")
    food = {i["item_id"] for i in json.loads(only_food.stdout)["items"]}
    assert food and food <= {"bake-0", "bake-1", "bake-2"}

    cold = json.loads(cli(service_env, "recommend", "nobody", "--json", "--limit", "2").stdout)
    assert cold["strategy"] == "fallback_popular"
    assert [i["item_id"] for i in cold["items"]] == ["bake-2", "bake-1"]

    text = cli(service_env, "profile", "ann")
    assert "deep learning" in text.stdout and "short_term" in text.stdout

    bad = cli(service_env, "recommend", "ann", "--dimension", "nonsense")
    assert bad.returncode == 1 and bad.stderr.startswith("error:")
    assert len(bad.stderr.strip().splitlines()) == 1


def test_demo_runs_end_to_end(service_env: dict[str, str]) -> None:
    out = subprocess.run(
        [*CLI, "demo", "--fast"], env=service_env, capture_output=True, text=True, timeout=600
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    assert "=== before the shift ===" in text and "=== after the shift ===" in text
    after = text.split("=== after the shift ===")[1]
    # alice moved from deep learning to baking: her short-term picture follows.
    alice = after.split("user alice:")[1].split("user bob:")[0]
    assert "right now (short_term only): baking" in alice
    bob = after.split("user bob:")[1].split("user carol:")[0]
    assert "right now (short_term only): astronomy" in bob
    assert "done: workers stopped cleanly" in text
