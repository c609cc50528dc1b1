"""`interest-stream rebuild` against the real broker, the real workers and the bundled model.

The live pipeline (generation 0, `interest-stream run`) folds a few users' events; `rebuild start
1` with the same settings replays the events topic into generation 1 while generation 0 keeps
running, and every user's vectors and seq come out equal to the live ones; `rebuild start 2`
with another INTEREST_PROFILE_CLUSTER_K runs while generation 0 keeps answering `profile`; then
`rebuild switch 2` makes `profile` and `recommend` read generation 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from kafka_testing import RunProcess, run_env

from models.settings import QdrantSettings
from models.store import InterestStore
from streams.settings import KafkaSettings, TopicSettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "streams.cli"]
USERS = [f"u{i}" for i in range(5)]
TOPIC_WORDS = ["jazz piano", "mountain hiking", "python programming", "french cooking"]
START_TIMEOUT_S = 240
T0_MS = int(time.time() * 1000) - 3_600_000


def catalog() -> list[dict[str, Any]]:
    return [
        {"id": f"i{t}{k}", "text": f"{words} item {k}", "payload": {"tags": [words.split()[0]]}}
        for t, words in enumerate(TOPIC_WORDS)
        for k in range(3)
    ]


def events() -> list[dict[str, Any]]:
    """Each user: item events in three topics and a search, in event-time order."""
    out = []
    for u, user in enumerate(USERS):
        for n in range(6):
            topic = (u + n // 2) % len(TOPIC_WORDS)  # three topics per user
            event: dict[str, Any] = {
                "event_id": f"{user}-e{n}", "user_id": user, "ts": T0_MS + u * 1000 + n * 60_000,
                "type": ("click", "like", "view")[n % 3], "item_id": f"i{topic}{n % 3}",
            }  # fmt: skip
            out.append(event)
        out.append(
            {"event_id": f"{user}-s", "user_id": user, "type": "search",
             "ts": T0_MS + u * 1000 + 400_000, "text": TOPIC_WORDS[u % len(TOPIC_WORDS)]}
        )  # fmt: skip
    return out


def cli(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def profile(env: dict[str, str], user: str, *extra: str) -> dict[str, Any]:
    done = cli(env, "profile", user, "--json", *extra)
    assert done.returncode == 0, done.stderr
    view: dict[str, Any] = json.loads(done.stdout)
    return view


@pytest.fixture
def env(kafka: KafkaSettings, topics: TopicSettings, tmp_path: Path) -> dict[str, str]:
    # No INTEREST_* of the caller's but the broker's port: every generation name is derived here.
    environ = {
        k: v for k, v in os.environ.items()
        if not k.startswith("INTEREST_") or k == "INTEREST_BROKER_PORT"
    }  # fmt: skip
    data = tmp_path / "data"
    name = topics.events.split(".")[0]  # the `topics` fixture's names are this run_env's
    return run_env(kafka, data, name, inherit=environ, INTEREST_DATA_DIR=str(data))


@pytest.fixture
def live(env: dict[str, str], tmp_path: Path) -> Iterator[RunProcess]:
    """Generation 0's `run`, with the catalog loaded and every event folded."""
    run = RunProcess.start(env, tmp_path / "run.out", timeout_s=START_TIMEOUT_S)
    try:
        (tmp_path / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in catalog()))
        assert cli(env, "items", "load", str(tmp_path / "items.jsonl")).returncode == 0
        (tmp_path / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events()))
        published = cli(env, "publish", str(tmp_path / "events.jsonl"))
        assert published.returncode == 0, published.stderr
        deadline = time.monotonic() + 90
        while any(profile(env, u).get("seq") != 7 for u in USERS):
            assert time.monotonic() < deadline, run.logs()
            time.sleep(0.5)
        yield run
    finally:
        run.stop(timeout_s=60)


def users_of(path: str, generation: int) -> dict[str, tuple[dict[str, np.ndarray], Any]]:
    settings = QdrantSettings(path=Path(path), generation=generation)
    with InterestStore.from_settings(settings) as store:
        found = store.get_users(USERS)
    return {
        u: ({k: np.asarray(v) for k, v in s.vectors.items()}, s.payload) for u, s in found.items()
    }


def test_rebuild_replays_into_equal_vectors_then_switches_readers(
    env: dict[str, str], live: RunProcess, tmp_path: Path
) -> None:
    same = cli(env, "rebuild", "start", "1", timeout=300)
    assert same.returncode == 0, same.stdout[-3000:] + same.stderr[-3000:]
    assert "generation 1 caught up: 35 events replayed" in same.stdout, same.stdout

    # Generation 2, another K, while generation 0 keeps answering.
    log = (tmp_path / "rebuild2.out").open("wb")
    other = subprocess.Popen(
        [*CLI, "rebuild", "start", "2"], env={**env, "INTEREST_PROFILE_CLUSTER_K": "2"},
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    answered = 0
    try:
        while other.poll() is None:
            assert profile(env, "u1")["seq"] == 7  # through generation 0's API
            answered += 1
            time.sleep(0.5)
    finally:
        if other.poll() is None:
            other.kill()
        other.wait(timeout=60)
        log.close()
    output = (tmp_path / "rebuild2.out").read_text()
    assert other.returncode == 0, output[-3000:]
    assert answered >= 3 and "generation 2 caught up" in output

    assert live.stop(timeout_s=60) in (0, -signal.SIGINT)  # both stores free, to compare

    path = env["INTEREST_QDRANT_PATH"]
    live_users, rebuilt = users_of(path, 0), users_of(path, 1)
    assert sorted(live_users) == sorted(rebuilt) == USERS
    for user in USERS:
        vectors, payload = live_users[user]
        again, again_payload = rebuilt[user]
        assert payload["seq"] == again_payload["seq"] == 7
        assert sorted(vectors) == sorted(again), user
        for name, vector in vectors.items():
            np.testing.assert_allclose(again[name], vector, atol=1e-5, err_msg=f"{user} {name}")

    # Refusals, then the switch.
    serving_refused = cli(env, "rebuild", "start", "0")
    assert serving_refused.returncode == 1 and serving_refused.stderr.startswith("error: ")
    switched = cli(env, "rebuild", "switch", "2", "--max-lag", "0")
    assert switched.returncode == 0, switched.stderr
    assert "generation 2 serves now (was 0)" in switched.stdout
    status = json.loads(cli(env, "rebuild", "status", "--json").stdout)
    assert [(r["generation"], r["serving"]) for r in status] == [(0, False), (1, False), (2, True)]
    assert {r["generation"]: r.get("cluster_k") for r in status} == {0: 4, 1: 4, 2: 2}
    again = cli(env, "rebuild", "start", "2")
    assert again.returncode == 1 and "generation 2 serves the readers" in again.stderr

    view = profile(env, "u1", "--vectors")  # now generation 2's point, K = 2
    generation_2 = users_of(path, 2)["u1"][0]
    assert view["seq"] == 7 and sorted(view["vectors"]) == sorted(generation_2)
    for name, vector in generation_2.items():
        np.testing.assert_allclose(view["vectors"][name], vector, atol=1e-6)
    slots = {n for n in live_users["u1"][0] if n.startswith("interest_")}
    assert len(slots) >= 3  # generation 0 (K = 4) has more: the view is not generation 0's
    assert {n for n in generation_2 if n.startswith("interest_")} <= {"interest_0", "interest_1"}
    recommended = cli(env, "recommend", "u1", "--json")
    assert recommended.returncode == 0, recommended.stderr
    assert json.loads(recommended.stdout)["items"]
