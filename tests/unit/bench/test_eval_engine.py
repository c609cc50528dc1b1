"""The evaluation's fast scorer answers what ``Recommender.recommend`` answers.

Random items (with exact duplicates, as MovieLens has) and planted users in the embedded store
(Qdrant's engine, :class:`~models.store.edge.EdgeBackend`); every recommend variant the
evaluation uses is planned and executed by :mod:`bench.eval.engine` and compared with the real
call: the same items in the same order but for the order of exactly tied duplicates (which the
engine leaves unspecified and the scorer gives to the item listed first), scores equal to
float32 precision. Also after the store is closed and reopened.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client.http import models as qm

from bench.eval.engine import (
    Engine,
    ItemIndex,
    Unsupported,
    agreement,
    plan,
    recommend_ids,
    same_up_to_ties,
)
from models.query_plan import build_request
from models.recommend import Recommender
from models.store import InterestStore
from models.store.edge import EdgeBackend

DIM = 16
VECTORS = ["short_term", "long_term", "search", "negative", *(f"interest_{i}" for i in range(4))]
ITEM_IDS = [f"i{n}" for n in range(120)]


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def fill(store: InterestStore, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    store.ensure_collections(DIM, VECTORS)
    vectors = [unit(rng.normal(size=DIM)) for _ in ITEM_IDS]
    for n in range(0, 20, 4):  # exact duplicates: ties that only the row order breaks
        vectors[n + 1] = vectors[n]
    items = []
    for n, (item, vec) in enumerate(zip(ITEM_IDS, vectors, strict=True)):
        payload: dict[str, Any] = {"popularity": float(rng.integers(0, 300))}
        if n % 17 == 0:
            payload = {}  # no popularity: the prior's guard must skip it
        items.append((item, vec, payload))
    store.upsert_items(items)
    users = []
    for u in range(6):
        named = {name: unit(rng.normal(size=DIM)) for name in VECTORS if name != "search"}
        if u == 5:
            named = {"negative": named["negative"]}  # nothing positive: the fallback path
        slots = [{"slot": i, "weight": w, "label": f"l{i}"} for i, w in enumerate((0.5, 0.3, 0.2))]
        payload = {"state": {"v": 1, "interests": slots}, "recent_items": ITEM_IDS[u : u + 5]}
        users.append((f"u{u}", named, payload))
    store.upsert_users(users)


CALLS: list[dict[str, Any]] = [
    {"negative_weight": 0.5, "popularity_weight": 0.01},
    {"negative_weight": 0.0, "popularity_weight": 0.0},
    {"negative_weight": 1.0, "popularity_weight": 2.0, "weights": {"short_term": 4.0}},
    {"dimensions": ["short_term"], "negative_weight": 0.0, "popularity_weight": 0.0},
    {"dimensions": ["interests"], "negative_weight": 0.3, "popularity_weight": 0.5},
    {"weights": {"long_term": 0.0, "interests": 0.25}, "negative_weight": 0.1,
     "popularity_weight": 0.3},
]  # fmt: skip


@pytest.fixture
def store(tmp_path: Path) -> Iterator[InterestStore]:
    s = InterestStore(EdgeBackend(tmp_path), dimension=DIM)
    fill(s)
    yield s
    s.close()


def check_all(store: InterestStore) -> None:
    engine = Engine(ItemIndex.from_store(store, ITEM_IDS))
    recommender = Recommender(store)
    users = store.get_users([f"u{u}" for u in range(6)])
    for user_id, user in users.items():
        for call in CALLS:
            for limit in (5, 30):
                kwargs = {**call, "limit": limit, "exclude_items": ["i40", "i41", "i0"]}
                real = recommender.recommend(user_id, **kwargs)
                request = plan(recommender, user, **kwargs)
                if real.strategy != "personal":
                    assert request is None
                    ids, strategy = recommend_ids(engine, recommender, user_id, user, **kwargs)
                    assert (ids, strategy) == ([i.item_id for i in real.items], real.strategy)
                    continue
                assert request is not None
                mine = engine.execute(request)
                longer = engine.execute(request.model_copy(update={"limit": limit + 20}))
                assert mine == longer[:limit]
                answer = [(r.item_id, r.score) for r in real.items]
                assert same_up_to_ties(longer, answer), (user_id, call, mine, answer)
                assert np.allclose([s for _, s in mine], [s for _, s in answer], atol=1e-6)
                assert_ties_in_catalog_order(mine)


def assert_ties_in_catalog_order(answer: list[tuple[str, float]]) -> None:
    """The scorer's own rule: exactly tied items come in catalog (``ITEM_IDS``) order."""
    for (a, score_a), (b, score_b) in itertools.pairwise(answer):
        if score_a == score_b:
            assert ITEM_IDS.index(a) < ITEM_IDS.index(b), (a, b)


def test_engine_matches_the_recommender(store: InterestStore) -> None:
    check_all(store)


def test_engine_matches_after_a_reopen(tmp_path: Path) -> None:
    s = InterestStore(EdgeBackend(tmp_path), dimension=DIM)
    fill(s)
    s.close()
    reopened = InterestStore(EdgeBackend(tmp_path), dimension=DIM)
    try:
        check_all(reopened)
    finally:
        reopened.close()


def test_agreement_counts_identical_answers(store: InterestStore) -> None:
    engine = Engine(ItemIndex.from_store(store, ITEM_IDS), memo=True)
    users = store.get_users(["u0", "u1"])
    calls = [{**c, "limit": 10} for c in CALLS]
    got = agreement(engine, Recommender(store), dict(users), calls)
    assert got["queries"] == len(calls) * 2 == got["same_up_to_ties"]
    assert 0 < got["identical"] <= got["queries"]
    assert got["max_abs_score_diff"] < 1e-6


def test_same_up_to_ties_accepts_only_reordered_ties() -> None:
    real = [("a", 0.9), ("b", 0.5), ("c", 0.5), ("d", 0.4), ("e", 0.3), ("f", 0.3)]
    assert same_up_to_ties(real, real)
    swapped = [("a", 0.9), ("c", 0.5), ("b", 0.5), ("d", 0.4), ("f", 0.3), ("e", 0.3)]
    assert same_up_to_ties(swapped, real)
    # The limit cut a tie: the scorer kept "g" where the engine kept "f" -- fine when "f"
    # ties with "g" further down the scorer's longer list, not otherwise.
    cut = [*real[:5], ("g", 0.3), ("f", 0.3), ("h", 0.1)]
    assert same_up_to_ties(cut, real)
    assert not same_up_to_ties([*real[:5], ("g", 0.3), ("f", 0.2)], real)
    assert not same_up_to_ties([*real[:5], ("g", 0.3)], [*real[:5], ("f", 0.3 + 1e-3)])
    # A tie inside the list must hold the same items.
    assert not same_up_to_ties([("a", 0.9), ("b", 0.5), ("g", 0.5), *real[3:]], real)
    assert not same_up_to_ties([("b", 0.9), ("a", 0.9), *real[2:]], real)
    assert not same_up_to_ties(real[:-1], real)


def test_unsupported_requests_raise(store: InterestStore) -> None:
    engine = Engine(ItemIndex.from_store(store, ITEM_IDS))
    user = store.get_users(["u0"])["u0"]
    planned = plan(Recommender(store), user, limit=5, negative_weight=0.0, popularity_weight=0.0)
    assert planned is not None
    genre = qm.FieldCondition(key="genre", match=qm.MatchValue(value="x"))
    request = planned.model_copy(update={"filter": qm.Filter(must=[genre])})
    with pytest.raises(Unsupported):
        engine.execute(request)
    vectors = {n: v.astype(np.float64) for n, v in user.vectors.items()}
    from models.query_plan import plan_sources

    sources, _ = plan_sources(vectors, user.payload)
    mmr = build_request(
        sources, vectors, limit=5, query_filter=None, negative_weight=0.0,
        popularity_field=None, popularity_weight=0.0, diversity=0.5,
    )  # fmt: skip
    with pytest.raises(Unsupported):
        engine.execute(mmr)
