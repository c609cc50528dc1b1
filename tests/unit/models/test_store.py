"""InterestStore on embedded Qdrant in a temporary folder."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.settings import QdrantSettings
from models.store import (
    POINT_NAMESPACE,
    POPULARITY_FIELD,
    InterestStore,
    StoredUser,
    StoreLockedError,
    StoreSchemaError,
    item_point_id,
    user_point_id,
)

DIM = 8
NAMES = ["short_term", "long_term", "search", "negative", "interest_0", "interest_1"]


def _unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.linalg.norm(v))


@pytest.fixture
def settings(tmp_path: Path) -> QdrantSettings:
    return QdrantSettings(path=tmp_path / "qdrant")


@pytest.fixture
def store(settings: QdrantSettings) -> Iterator[InterestStore]:
    s = InterestStore.from_settings(settings, DIM)
    s.ensure_collections(DIM, NAMES)
    yield s
    s.close()


def test_point_ids_are_fixed_uuid5() -> None:
    assert uuid.UUID("5c239107-505c-55b4-8c38-7a33e6d410c4") == POINT_NAMESPACE
    assert user_point_id("u1") == str(uuid.uuid5(POINT_NAMESPACE, "u1"))
    assert user_point_id("u1") == user_point_id("u1") != user_point_id("u2")
    assert item_point_id("i1") == str(uuid.uuid5(POINT_NAMESPACE, "i1"))


def test_settings_default_path_is_under_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("INTEREST_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("INTEREST_QDRANT_API_KEY", "s3cret")
    s = QdrantSettings()
    assert s.path == tmp_path / "data" / "qdrant"
    assert s.url is None and s.users_collection == "users" and s.items_collection == "items"
    assert "s3cret" not in repr(s) and s.api_key is not None
    monkeypatch.setenv("INTEREST_QDRANT_URL", "")
    assert QdrantSettings().url is None


def test_collections_are_created_with_cosine_named_vectors(store: InterestStore) -> None:
    users = store.client.get_collection("users").config.params.vectors
    items = store.client.get_collection("items").config.params.vectors
    assert isinstance(users, dict) and isinstance(items, dict)
    assert set(users) == set(NAMES)
    assert all(p.size == DIM and p.distance.value == "Cosine" for p in users.values())
    assert set(items) == {"content"} and items["content"].size == DIM


def test_ensure_collections_is_idempotent_and_checks_schema(store: InterestStore) -> None:
    store.ensure_collections(DIM, NAMES)
    store.ensure_collections(DIM, NAMES[:4])  # fewer dimensions than stored: fine
    with pytest.raises(StoreSchemaError, match="384"):
        store.ensure_collections(384, NAMES)  # a different model
    with pytest.raises(StoreSchemaError, match="interest_7"):
        store.ensure_collections(DIM, [*NAMES, "interest_7"])


def test_user_round_trip_is_unit_normalised(store: InterestStore) -> None:
    rng = np.random.default_rng(0)
    vectors = {n: rng.normal(size=DIM).astype(np.float32) * 3 for n in NAMES[:3]}
    payload = {"seq": 7, "updated_at": 1_700_000_000_000, "profile": [{"label": "ml", "weight": 1}]}
    store.upsert_users([("u1", vectors, payload)])
    got = store.get_users(["u1"])
    assert set(got) == {"u1"}
    user = got["u1"]
    assert isinstance(user, StoredUser)
    assert set(user.vectors) == set(NAMES[:3])  # a point may lack some named vectors
    for name, vec in user.vectors.items():
        assert vec.dtype == np.float32
        np.testing.assert_allclose(vec, _unit(vectors[name]), atol=1e-6)
    assert user.payload == {**payload, "user_id": "u1"}


def test_missing_users_are_absent_and_one_request_serves_many(
    store: InterestStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    v = {"short_term": np.ones(DIM, dtype=np.float32)}
    store.upsert_users([(u, v, {"seq": 1, "updated_at": 0}) for u in ("a", "b")])
    calls: list[int] = []
    real = store.client.retrieve

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(store.client, "retrieve", counting)
    got = store.get_users(["a", "nobody", "b", "a"])
    assert set(got) == {"a", "b"} and len(calls) == 1
    assert store.get_users([]) == {} and len(calls) == 1


def test_upsert_replaces_the_whole_point(store: InterestStore) -> None:
    e = np.eye(DIM, dtype=np.float32)
    store.upsert_users([("u", {"short_term": e[0], "search": e[1]}, {"seq": 1, "updated_at": 1})])
    store.upsert_users([("u", {"short_term": e[2]}, {"seq": 2, "updated_at": 2})])
    user = store.get_users(["u"])["u"]
    assert set(user.vectors) == {"short_term"}  # the caller passes every vector the user has
    np.testing.assert_allclose(user.vectors["short_term"], e[2])
    assert user.payload["seq"] == 2


def test_a_user_point_may_have_no_vectors_at_all(store: InterestStore) -> None:
    # Progress of a user none of whose events had a vector yet: a point, payload only.
    store.upsert_users([("ghost", {}, {"seq": 3, "updated_at": 5, "events_folded": 0})])
    user = store.get_users(["ghost"])["ghost"]
    assert user.vectors == {}
    assert user.payload == {"seq": 3, "updated_at": 5, "events_folded": 0, "user_id": "ghost"}
    e = np.eye(DIM, dtype=np.float32)
    store.upsert_users([("ghost", {"short_term": e[0]}, {"seq": 4, "updated_at": 6})])
    user = store.get_users(["ghost"])["ghost"]
    assert set(user.vectors) == {"short_term"} and user.payload["seq"] == 4


def test_bad_vectors_are_rejected_with_the_user_named(store: InterestStore) -> None:
    with pytest.raises(ValueError, match=r"'u'.*shape"):
        store.upsert_users([("u", {"short_term": np.ones(3)}, {})])
    with pytest.raises(ValueError, match="zero vector"):
        store.upsert_users([("u", {"short_term": np.zeros(DIM)}, {})])
    with pytest.raises(ValueError, match="finite"):
        store.upsert_users([("u", {"short_term": np.full(DIM, np.nan)}, {})])
    with pytest.raises(ValueError, match="user_id"):
        store.upsert_users([("u", {"short_term": np.ones(DIM)}, {"user_id": "other"})])
    assert store.get_users(["u"]) == {}


def test_items_round_trip(store: InterestStore) -> None:
    rng = np.random.default_rng(1)
    vecs = {f"i{k}": rng.normal(size=DIM) for k in range(5)}
    store.upsert_items([(i, v, {"title": i.upper()}) for i, v in vecs.items()])
    got = store.get_item_vectors(["i0", "i3", "missing"])
    assert set(got) == {"i0", "i3"}
    for i in got:
        assert got[i].dtype == np.float32
        np.testing.assert_allclose(got[i], _unit(vecs[i]), atol=1e-6)
    rec = store.client.retrieve("items", ids=[item_point_id("i3")], with_payload=True)[0]
    assert rec.payload == {"title": "I3", "item_id": "i3"}


def _item_payload(store: InterestStore, item_id: str) -> dict[str, Any]:
    [rec] = store.client.retrieve("items", ids=[item_point_id(item_id)], with_payload=True)
    return dict(rec.payload or {})


def test_rewriting_items_keeps_their_live_popularity(store: InterestStore) -> None:
    e = np.eye(DIM, dtype=np.float32)
    store.upsert_items(
        [
            ("a", e[0], {"title": "old", "tags": ["x"]}),
            ("b", e[1], {"title": "b"}),
            ("c", e[2], {"title": "c", POPULARITY_FIELD: 1.5}),  # the catalog seeds a value
        ]
    )
    assert POPULARITY_FIELD not in _item_payload(store, "a")
    assert _item_payload(store, "c")[POPULARITY_FIELD] == 1.5
    # What the embed workers do with the stream workers' counts.
    store.client.set_payload("items", {POPULARITY_FIELD: 5.0}, points=[item_point_id("a")])
    store.client.set_payload("items", {POPULARITY_FIELD: 7.0}, points=[item_point_id("c")])

    # `items load` again: new title, tags dropped from the catalog, new vector, and a new item.
    store.upsert_items(
        [
            ("a", e[3], {"title": "new"}),
            ("c", e[2], {"title": "c", POPULARITY_FIELD: 1.5}),
            ("d", e[4], {"title": "d"}),
        ]
    )
    assert _item_payload(store, "a") == {"title": "new", "item_id": "a", POPULARITY_FIELD: 5.0}
    np.testing.assert_allclose(store.get_item_vectors(["a"])["a"], e[3])
    assert _item_payload(store, "c")[POPULARITY_FIELD] == 7.0  # the measured value wins
    assert _item_payload(store, "d") == {"title": "d", "item_id": "d"}  # new: none, as before
    assert _item_payload(store, "b") == {"title": "b", "item_id": "b"}  # not re-loaded: as is


def test_data_survives_reopen(settings: QdrantSettings) -> None:
    with InterestStore.from_settings(settings, DIM) as s:
        s.ensure_collections(DIM, NAMES)
        s.upsert_items([("i", np.ones(DIM), {})])
    with InterestStore.from_settings(settings, DIM) as s:
        assert set(s.get_item_vectors(["i"])) == {"i"}


def test_second_process_gets_a_clear_lock_error(
    store: InterestStore, settings: QdrantSettings
) -> None:
    script = textwrap.dedent(
        f"""
        from models.settings import QdrantSettings
        from models.store import InterestStore, StoreLockedError
        try:
            InterestStore.from_settings(QdrantSettings(path={str(settings.path)!r}), {DIM})
        except StoreLockedError as exc:
            print("LOCKED", exc)
        else:
            print("OPENED")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.startswith("LOCKED"), out.stdout + out.stderr
    assert str(settings.path) in out.stdout and "INTEREST_QDRANT_URL" in out.stdout


def test_lock_is_released_on_close(settings: QdrantSettings) -> None:
    first = InterestStore.from_settings(settings, DIM)
    with pytest.raises(StoreLockedError):
        InterestStore.from_settings(settings, DIM)  # flock is per open file: same process too
    first.close()
    InterestStore.from_settings(settings, DIM).close()
