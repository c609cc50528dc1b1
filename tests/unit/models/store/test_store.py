"""InterestStore on the default engine: embedded Qdrant (qdrant-edge) in a temporary folder."""

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
from qdrant_client import QdrantClient
from qdrant_client.http import models as qm

from models.recommend import Recommender
from models.settings import QdrantSettings, RecommendSettings, VectorStorage
from models.store import (
    POINT_NAMESPACE,
    POPULARITY_FIELD,
    CollectionLayout,
    InterestStore,
    LegacyStoreError,
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
    users = store.backend.info("users").config.params.vectors
    items = store.backend.info("items").config.params.vectors
    assert isinstance(users, dict) and isinstance(items, dict)
    assert set(users) == set(NAMES)
    assert all(p.size == DIM and p.distance.value == "Cosine" for p in users.values())
    assert set(items) == {"content"} and items["content"].size == DIM
    assert store.backend.vector_params("items") == {"content": (DIM, "Cosine")}
    assert store.backend.vector_params("users") == {n: (DIM, "Cosine") for n in NAMES}


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
    # In the collection's order, every time (the engine's own order changes from call to call,
    # and recommend plans its sources in this order).
    for _ in range(5):
        assert list(store.get_users(["u1"])["u1"].vectors) == NAMES[:3]
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
    real = store.backend.retrieve

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(store.backend, "retrieve", counting)
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


def _item_payload(store: InterestStore, item_id: str) -> dict[str, Any]:
    [rec] = store.backend.retrieve(
        "items", [item_point_id(item_id)], with_payload=True, with_vectors=False
    )
    return dict(rec.payload or {})


def test_items_round_trip(store: InterestStore) -> None:
    rng = np.random.default_rng(1)
    vecs = {f"i{k}": rng.normal(size=DIM) for k in range(5)}
    store.upsert_items([(i, v, {"title": i.upper()}) for i, v in vecs.items()])
    got = store.get_item_vectors(["i0", "i3", "missing"])
    assert set(got) == {"i0", "i3"}
    for i in got:
        assert got[i].dtype == np.float32
        np.testing.assert_allclose(got[i], _unit(vecs[i]), atol=1e-6)
    assert _item_payload(store, "i3") == {"title": "I3", "item_id": "i3"}


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
    assert store.set_item_popularity({"a": 5.0, "c": 7.0}) == 2

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
    e = np.eye(DIM, dtype=np.float32)
    with InterestStore.from_settings(settings, DIM) as s:
        s.ensure_collections(DIM, NAMES)
        s.upsert_items([("i", np.ones(DIM), {"title": "t"})])
        s.upsert_users([("u", {"search": e[1]}, {"seq": 9, "updated_at": 1})])
        s.set_item_popularity({"i": 3.0})
    with InterestStore.from_settings(settings, DIM) as s:
        assert set(s.get_item_vectors(["i"])) == {"i"}
        assert _item_payload(s, "i") == {"title": "t", "item_id": "i", POPULARITY_FIELD: 3.0}
        user = s.get_users(["u"])["u"]
        np.testing.assert_allclose(user.vectors["search"], e[1])
        assert user.payload["seq"] == 9
        s.ensure_collections(DIM, NAMES)  # the reopened collections match the configuration


# -- the folder lock -----------------------------------------------------------------------------


def test_second_process_gets_a_clear_lock_error(
    store: InterestStore, settings: QdrantSettings
) -> None:
    assert (settings.path / ".lock").is_file()
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


def test_the_lock_is_a_flock_on_the_lock_file(settings: QdrantSettings) -> None:
    """Whoever holds ``flock`` on ``<path>/.lock`` keeps the store out; a holder that dies
    without closing releases it (the kernel drops the lock with the process)."""
    settings.path.mkdir(parents=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys\n"
            f"f = open({str(settings.path / '.lock')!r}, 'w')\n"
            "fcntl.flock(f, fcntl.LOCK_EX)\n"
            "print('held', flush=True)\n"
            "sys.stdin.read()\n",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreLockedError, match="another process"):
            InterestStore.from_settings(settings, DIM)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    InterestStore.from_settings(settings, DIM).close()


def test_lock_is_released_on_close(settings: QdrantSettings) -> None:
    first = InterestStore.from_settings(settings, DIM)
    with pytest.raises(StoreLockedError):
        InterestStore.from_settings(settings, DIM)  # flock is per open file: same process too
    first.close()
    InterestStore.from_settings(settings, DIM).close()


# -- an earlier version's store ------------------------------------------------------------------


def test_a_qdrant_client_local_mode_folder_asks_for_migration(tmp_path: Path) -> None:
    old = tmp_path / "qdrant"
    client = QdrantClient(path=str(old))  # what earlier versions wrote in the data dir
    client.create_collection(
        "items", vectors_config={"content": qm.VectorParams(size=DIM, distance=qm.Distance.COSINE)}
    )
    client.close()
    with pytest.raises(LegacyStoreError, match="interest-stream store migrate") as info:
        InterestStore.from_settings(QdrantSettings(path=old), DIM)
    assert str(old) in str(info.value)
    assert (old / "meta.json").is_file() and (old / "collection" / "items").is_dir()  # untouched
    assert not (old / "items").exists()  # no new-engine collection made beside the old one


# -- items: the popularity index and live popularity ---------------------------------------------


def test_items_get_a_float_popularity_index_that_orders_the_fallback(
    store: InterestStore,
) -> None:
    """The engine orders by a payload field only with a range index on it, as a server does:
    ``ensure_collections`` creates one on ``popularity`` so the popular-items fallback works."""
    schema = store.backend.info("items").payload_schema
    assert schema[POPULARITY_FIELD].data_type == qm.PayloadSchemaType.FLOAT
    e = np.eye(DIM, dtype=np.float32)
    pops = {"low": 1.0, "top": 30.5, "mid": 7.0, "none": None}
    catalog = [
        (i, e[k], {} if p is None else {POPULARITY_FIELD: p})
        for k, (i, p) in enumerate(pops.items())
    ]
    store.upsert_items(catalog)
    rec = Recommender(store, settings=RecommendSettings()).recommend("unknown-user", limit=5)
    assert rec.strategy == "fallback_popular"
    ranked = [(i.item_id, i.score) for i in rec.items]
    # The item without a value only tops the list up to the limit, last (issue 19).
    assert ranked == [("top", 30.5), ("mid", 7.0), ("low", 1.0), ("none", 0.0)]

    # The same items in a collection made without the index: the engine refuses to order.
    store.backend.create_collection("bare", CollectionLayout(("content",), DIM, searched=True))
    bare = InterestStore(store.backend, dimension=DIM, items_collection="bare")
    bare.upsert_items(catalog)
    rec = Recommender(bare, settings=RecommendSettings()).recommend("unknown-user", limit=5)
    assert rec.strategy == "fallback_empty" and "unavailable" in rec.explanation.note


def test_set_item_popularity_sets_only_existing_items(store: InterestStore) -> None:
    assert store.set_item_popularity({}) == 0
    store.upsert_items([("a", np.ones(DIM), {"title": "a"})])
    assert store.set_item_popularity({"a": 2.5, "ghost": 9.0}) == 1
    assert _item_payload(store, "a") == {"title": "a", "item_id": "a", POPULARITY_FIELD: 2.5}
    assert store.get_item_vectors(["ghost"]) == {}
    assert store.backend.count("items") == 1  # no point was created for the unknown item


def test_set_item_popularity_without_items_collection(tmp_path: Path) -> None:
    with InterestStore.from_settings(QdrantSettings(path=tmp_path / "q"), DIM) as fresh:
        assert fresh.set_item_popularity({"a": 1.0}) == 0
        assert not fresh.backend.collection_exists("items")


# -- sizing --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("users_storage", "items_storage"), [("ram", "int8"), ("int8", "disk"), ("disk", "int8")]
)
def test_sizing_settings_create_working_collections(
    tmp_path: Path, users_storage: VectorStorage, items_storage: VectorStorage
) -> None:
    settings = QdrantSettings(
        path=tmp_path / "q",
        users_storage=users_storage,
        items_storage=items_storage,
        items_hnsw_m=8,
        search_hnsw_ef=32,
        payload_on_disk=False,
        item_payload_indexes={"category": "keyword"},
    )
    rng = np.random.default_rng(2)
    items = {f"i{k}": rng.normal(size=DIM) for k in range(20)}
    user = rng.normal(size=DIM)
    with InterestStore.from_settings(settings, DIM) as s:
        s.ensure_collections(DIM, NAMES)
        s.upsert_items([(i, v, {"category": i[-1]}) for i, v in items.items()])
        s.upsert_users([("u", {"short_term": user}, {"seq": 1, "updated_at": 0})])
        got_items = s.get_item_vectors(list(items))
        got_user = s.get_users(["u"])["u"].vectors["short_term"]
        hits = s.query_items(
            qm.QueryRequest(query=list(user), using="content", limit=3, with_payload=True)
        )
        info = s.backend.info("items")
    for i, v in items.items():
        np.testing.assert_allclose(got_items[i], _unit(v), atol=1e-6)
    np.testing.assert_allclose(got_user, _unit(user), atol=1e-6)
    cosines = {i: float(_unit(v) @ _unit(user)) for i, v in items.items()}
    assert [h.payload["item_id"] for h in hits if h.payload] == sorted(
        cosines, key=lambda i: -cosines[i]
    )[:3]  # 20 items: an exact search; int8 results are rescored with the originals
    vectors = info.config.params.vectors
    assert isinstance(vectors, dict) and vectors["content"].on_disk is (items_storage != "ram")
    assert set(info.payload_schema) >= {POPULARITY_FIELD, "item_id", "category"}
