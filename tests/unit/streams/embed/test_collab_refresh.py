"""Rebuilding the items' collaborative vectors from the users' engagement lists (embedded
Qdrant, no model: the user points carry the lists the fold keeps, the items random content)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import EdgeStoreFactory

from models.collab import (
    COLLAB,
    DISTANCE,
    CoEngagement,
    CollabSpec,
    Entry,
    engaged_to_payload,
    item_embedding,
)
from models.recommend import Recommender
from models.settings import RecommendSettings
from models.store import InterestStore
from streams.embed.collab import CollabRefresher

DIM = 16
SPEC = CollabSpec(rank=4, shrinkage=5.0, cold_ridge=0.1, cold_scale=2.0)
DAY = 86_400_000


def _world(store: InterestStore, spec: CollabSpec = SPEC) -> dict[str, list[Entry]]:
    """Items ``i0..i19`` (``i18`` only ever disliked, ``i19`` never touched) and 30 users who
    engage two overlapping groups of items."""
    rng = np.random.default_rng(0)
    store.ensure_collections(DIM, ["short_term"], {COLLAB: (spec.rank, DISTANCE)})
    store.upsert_items(
        [(f"i{k}", rng.standard_normal(DIM), {"popularity": 1.0}) for k in range(20)]
    )
    lists: dict[str, list[Entry]] = {}
    for u in range(30):
        group = range(0, 10) if u % 2 else range(8, 18)
        picked = rng.choice(list(group), size=5, replace=False)
        entries: list[Entry] = [(f"i{k}", DAY * (u + k), 1.0) for k in picked]
        if u == 0:
            entries.append(("i18", DAY, -1.0))
        lists[f"u{u}"] = entries
    vec = {"short_term": rng.standard_normal(DIM)}
    store.upsert_users(
        [(u, vec, {"seq": 1, "engaged": engaged_to_payload(e)}) for u, e in lists.items()]
    )
    return lists


def _collab(store: InterestStore) -> dict[str, np.ndarray]:
    return store.get_item_vectors([f"i{k}" for k in range(20)], COLLAB)


def test_every_item_gets_a_vector_learned_or_predicted(edge_store: EdgeStoreFactory) -> None:
    store = edge_store(DIM)
    lists = _world(store)
    report = CollabRefresher(store, SPEC).refresh()
    assert (report.users, report.items_learned, report.items_predicted) == (30, 18, 2)
    got = _collab(store)
    assert len(got) == 20
    co = CoEngagement(SPEC)  # the offline computation over the same lists
    for entries in lists.values():
        co.count(entries)
    items = co.freeze()
    for entries in lists.values():
        co.add(entries)
    expected = item_embedding(co.gram, SPEC.rank, SPEC.shrinkage)
    for row, item in enumerate(items):
        assert np.allclose(got[item], expected[row], atol=1e-6)
    # Never touched: the prediction × cold_scale; only disliked: the prediction as it is.
    assert np.linalg.norm(got["i19"]) > 0 and np.linalg.norm(got["i18"]) > 0
    CollabRefresher(store, replace(SPEC, cold_scale=1.0)).refresh()
    plain = _collab(store)
    assert np.allclose(got["i19"], 2.0 * plain["i19"], atol=1e-6)
    assert np.allclose(got["i18"], plain["i18"], atol=1e-6)


def test_a_rebuild_depends_only_on_what_is_stored(edge_store: EdgeStoreFactory) -> None:
    store = edge_store(DIM)
    _world(store)
    CollabRefresher(store, SPEC).refresh()
    first = _collab(store)
    CollabRefresher(store, SPEC).refresh()
    assert all(np.array_equal(first[i], v) for i, v in _collab(store).items())
    # Re-loading the catalog keeps the derived vectors (as it keeps popularity).
    store.upsert_items([("i3", np.ones(DIM), {"title": "again"})])
    assert np.array_equal(_collab(store)["i3"], first["i3"])


def test_nothing_to_rebuild_without_the_vector_or_any_engagement(
    edge_store: EdgeStoreFactory,
) -> None:
    bare = edge_store(DIM, folder="bare")
    bare.ensure_collections(DIM, ["short_term"])
    bare.upsert_items([("a", np.ones(DIM), {})])
    assert CollabRefresher(bare, SPEC).refresh().items_learned == 0
    empty = edge_store(DIM, folder="empty")
    empty.ensure_collections(DIM, ["short_term"], {COLLAB: (4, DISTANCE)})
    empty.upsert_items([("a", np.ones(DIM), {})])
    assert CollabRefresher(empty, SPEC).refresh().items_learned == 0
    assert empty.get_item_vectors(["a"], COLLAB) == {}


def test_the_vector_is_added_to_an_old_store_and_remade_when_its_size_changes(
    edge_store: EdgeStoreFactory,
) -> None:
    store = edge_store(DIM)
    store.ensure_collections(DIM, ["short_term"])
    store.upsert_items([("a", np.ones(DIM), {})])
    store.ensure_collections(DIM, ["short_term"], {COLLAB: (4, DISTANCE)})
    assert store.item_vector_names()[COLLAB] == (4, "Dot")
    store.set_item_vectors(COLLAB, {"a": [1.0, 0.0, 0.0, 0.0]})
    store.ensure_collections(DIM, ["short_term"], {COLLAB: (6, DISTANCE)})
    assert store.item_vector_names()[COLLAB] == (6, "Dot")
    assert store.get_item_vectors(["a"], COLLAB) == {}  # derived: rebuilt by the next refresh
    assert "a" in store.get_item_vectors(["a"])  # the content vector stays


def test_recommend_fuses_the_collaborative_dimension(edge_store: EdgeStoreFactory) -> None:
    store = edge_store(DIM)
    lists = _world(store)
    CollabRefresher(store, SPEC).refresh()
    r = Recommender(store, settings=RecommendSettings(centering=0.0, popularity_weight=0.0))
    seen = sorted(i for i, _, _ in lists["u1"])
    answer = r.recommend("u1", limit=5, exclude_items=seen)
    kinds = {s.kind: s.weight for s in answer.explanation.sources}
    assert answer.strategy == "personal" and "collab" in kinds
    alone = r.recommend("u1", limit=5, dimensions=[COLLAB], exclude_items=seen)
    assert [s.kind for s in alone.explanation.sources] == ["collab"]
    assert not set(seen) & {i.item_id for i in alone.items}
    # u1 engaged the first group: its collaborative neighbours come from that group.
    assert all(int(i.item_id[1:]) < 10 or i.item_id == "i19" for i in alone.items[:3])
    off = r.recommend("u1", limit=5, weights={COLLAB: 0.0})
    assert all(s.kind != "collab" for s in off.explanation.sources)
    with pytest.raises(ValueError):
        r.recommend("u1", weights={COLLAB: -1.0})
