"""The embedded engine answers exactly as Qdrant does: same writes, same reads, same rankings.

One deterministic synthetic world (items in topic clusters with varied payloads, users with
every kind of vector set) is written through :class:`InterestStore` to the embedded backend
(qdrant-edge) and to a reference: qdrant-client's pure-Python local mode always, and a real
Qdrant server when ``INTEREST_TEST_QDRANT_URL`` is set (``INTEREST_TEST_QDRANT_API_KEY``
optional; the collections get unique names and are deleted afterwards). Then the same profile
reads and the same ``recommend`` calls must give the same item ids in the same order with
scores within 1e-4, covering every feature of the recommend plan: per-dimension prefetches,
cluster weights, the negative penalty, the popularity prior, exclusions, payload filters of
every shape, MMR and the popular-items fallback of cold start.

Ties: scores are weighted sums of cosines of random float vectors plus ``ln(1 + popularity)``
of distinct random popularities, so exact ties do not occur in practice; still, a ranking is
compared as ordered groups of scores within :data:`TIE` of each other, each group as a set (the
last one only where the limit does not cut it), because the order of equal scores is the
engine's business. MMR answers are not sorted by score and are compared position by position.

Two known deviations are expected failures (xfail) with their reasons: payload floats of 16-17
significant digits come back from qdrant-edge up to one ulp off (:data:`FLOAT_ULPS`), and local
mode orders by a field without a range index where Qdrant refuses.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from models.recommend import Recommendation, Recommender, RecommendOptions
from models.settings import (
    DEFAULT_CENTERING,
    DEFAULT_NEGATIVE_WEIGHT,
    DEFAULT_POPULARITY_FIELD,
    DEFAULT_POPULARITY_WEIGHT,
    RecommendSettings,
)
from models.store import InterestStore
from models.store.client import ClientBackend
from models.store.edge import EdgeBackend

DIM = 32
SEED = 20_240_513
TOPICS = ("jazz", "rock", "film", "cooking", "travel", "science")
PER_TOPIC = 50
TAGS = ("classic", "new", "award", "indie", "live", "short", "long", "remaster")
USER_VECTORS = (
    "short_term",
    "long_term",
    "search",
    "negative",
    "interest_0",
    "interest_1",
    "interest_2",
    "interest_3",
)
SCORE_TOL = 1e-4
VECTOR_TOL = 1e-6
TIE = 1e-6
"""Scores closer than this may come in either order (see the module doc)."""
FLOAT_ULPS = 1
"""How far a payload float may come back from the embedded engine: qdrant-edge 0.9 stores a
float with 16-17 significant digits up to one ulp off (about 1 in 10 random doubles; 15 digits
or fewer come back exact), apparently parsing it with serde_json's default, not round-trip
exact, float parser. Harmless for the interest state (relative error 1e-16) and the popularity
prior; an exact-value float filter on such a value is the one visible effect
(:func:`test_float_filter_on_a_17_digit_value`)."""

#: The shipped defaults, spelled out so an ``INTEREST_RECOMMEND_*`` variable in the environment
#: cannot change what is tested: centering on (the catalog centroid), a popularity prior.
SETTINGS = RecommendSettings(
    dimension_weights={},
    negative_weight=DEFAULT_NEGATIVE_WEIGHT,
    popularity_weight=DEFAULT_POPULARITY_WEIGHT,
    popularity_field=DEFAULT_POPULARITY_FIELD,
    centering=DEFAULT_CENTERING,
    centroid_sample=2000,
    centroid_ttl_s=600.0,
)
assert SETTINGS.centering > 0 and SETTINGS.popularity_weight > 0


# -- the world -----------------------------------------------------------------------------------


Vector = np.ndarray


@dataclass(frozen=True)
class World:
    """What every backend gets written: items, popularity updates, a re-load, users."""

    items: list[tuple[str, Vector, dict[str, Any]]]
    popularity_updates: dict[str, float]
    reloaded: list[tuple[str, Vector, dict[str, Any]]]
    users: list[tuple[str, dict[str, Vector], dict[str, Any]]]
    central: list[str]
    """The three items nearest each topic's center (top answers, so excluding them matters)."""

    @property
    def user_ids(self) -> list[str]:
        return [u for u, _, _ in self.users] + ["ghost"]  # "ghost" is never written


def unit(v: np.ndarray) -> np.ndarray:
    return np.asarray(v / np.linalg.norm(v), dtype=np.float64)


def make_items(
    rng: np.random.Generator, centers: np.ndarray, common: np.ndarray
) -> list[tuple[str, Vector, dict[str, Any]]]:
    """Items near their topic's center, all sharing a common component (centering matters).

    Popularity: distinct random floats, except every 7th item has none, every 29th a negative
    value and every 31st a list (the prior's guard must skip those three kinds).
    """
    items = []
    for t, name in enumerate(TOPICS):
        for j in range(PER_TOPIC):
            i = t * PER_TOPIC + j
            noise = rng.normal(size=DIM) * 0.55 / math.sqrt(DIM)
            vector = unit(0.7 * common + centers[t] + noise)
            tags = sorted(rng.choice(TAGS, size=int(rng.integers(1, 4)), replace=False).tolist())
            payload: dict[str, Any] = {
                "category": name,
                "year": int(rng.integers(1975, 2025)),
                "rating": float(rng.integers(2, 11)) / 2,
                "tags": tags,
                "score": float(rng.random()),  # 16-17 digits, no index: see FLOAT_ULPS
                "new": j % 3 == 0,
            }
            popularity = float(rng.uniform(0.0, 1000.0))
            if i % 29 == 5:
                payload["popularity"] = -popularity
            elif i % 31 == 7:
                payload["popularity"] = [popularity, popularity / 2]
            elif i % 7 != 3:
                payload["popularity"] = popularity
            items.append((f"{name}-{j:03d}", vector, payload))
    return items


def user_state(
    rng: np.random.Generator, names: Sequence[str], topics: Mapping[str, int], equal: bool
) -> dict[str, Any]:
    """``payload.state`` as the embed worker writes it: mass/norm per dimension and slot, and
    cluster weights and labels (none at all when ``equal``: equal shares)."""

    def sums() -> dict[str, Any]:
        mass = float(rng.uniform(1.0, 20.0))
        return {
            "mass": mass,
            "norm": mass * float(rng.uniform(0.3, 1.0)),
            "ref_ts_ms": 1_700_000_000_000 + int(rng.integers(0, 10**9)),
            "count": int(rng.integers(1, 50)),
        }

    dims = {n: sums() for n in names if not n.startswith("interest_")}
    slots = [n for n in names if n.startswith("interest_")]
    weights = rng.dirichlet(np.ones(len(slots))).tolist() if slots else []
    interests = []
    for n, w in zip(slots, weights, strict=True):
        entry = {"slot": int(n.removeprefix("interest_")), **sums()}
        entry["tags"] = [[TAGS[topics[n] % len(TAGS)], 2.0]]
        if not equal:
            entry["weight"] = float(w)
            entry["label"] = TOPICS[topics[n]]
        interests.append(entry)
    return {"v": 1, "dimensions": dims, "interests": interests}


PATTERNS: tuple[tuple[str, ...], ...] = (
    ("short_term",),
    ("short_term", "long_term"),
    ("short_term", "long_term", "search"),
    ("long_term", "search", "negative"),
    ("interest_0",),
    ("interest_0", "interest_1"),
    ("interest_0", "interest_1", "interest_2", "interest_3"),
    ("short_term", "interest_0", "interest_2", "negative"),
    ("short_term", "long_term", "search", "negative", "interest_0", "interest_1", "interest_2"),
    ("search", "interest_1", "interest_3"),
)


def make_users(
    rng: np.random.Generator,
    centers: np.ndarray,
    common: np.ndarray,
    item_ids: Sequence[str],
) -> list[tuple[str, dict[str, Vector], dict[str, Any]]]:
    """Two users per pattern (one with equal cluster shares), plus a user with no vectors and
    one with only a negative vector (both cold start)."""
    users = []
    for i in range(2 * len(PATTERNS)):
        names = PATTERNS[i % len(PATTERNS)]
        topics = {n: int(rng.integers(0, len(TOPICS))) for n in names}
        vectors = {
            n: unit(0.7 * common + centers[t] + rng.normal(size=DIM) * 0.4 / math.sqrt(DIM))
            for n, t in topics.items()
        }
        main = next(iter(topics.values()))
        in_topic = [x for x in item_ids if x.startswith(TOPICS[main])]
        recent = rng.choice(in_topic, size=int(rng.integers(3, 9)), replace=False).tolist()
        payload = {
            "seq": i,
            "updated_at": 1_700_000_000 + i,
            "state": user_state(rng, names, topics, equal=i == len(PATTERNS) + 6),
            "profile": [{"label": TOPICS[t], "weight": 0.5} for t in set(topics.values())],
            "recent_items": recent,
        }
        users.append((f"u{i:02d}", vectors, payload))
    users.append(("u_empty", {}, {"seq": 1, "recent_items": item_ids[:3]}))
    negative = unit(0.7 * common + centers[0])
    users.append(("u_negative_only", {"negative": negative}, {"seq": 2}))
    return users


def make_world() -> World:
    rng = np.random.default_rng(SEED)
    centers = np.stack([unit(rng.normal(size=DIM)) for _ in TOPICS])
    common = unit(rng.normal(size=DIM))
    items = make_items(rng, centers, common)
    ids = [i for i, _, _ in items]
    updates = {ids[k]: float(rng.uniform(0.0, 1000.0)) for k in range(0, len(ids), 5)}
    updates["no-such-item"] = 5.0  # set_item_popularity must not create it
    # Re-loading items keeps their stored popularity: the 0.0 here only seeds items without one.
    reloaded = [(i, v, {**p, "popularity": 0.0}) for i, v, p in items[::11]]
    central = []
    for t, name in enumerate(TOPICS):
        mine = [(float(v @ centers[t]), i) for i, v, _ in items if i.startswith(name)]
        central += [i for _, i in sorted(mine, reverse=True)[:3]]
    return World(items, updates, reloaded, make_users(rng, centers, common, ids), central)


WORLD = make_world()


def write(store: InterestStore, world: World) -> None:
    store.ensure_collections(DIM, USER_VECTORS)
    store.upsert_items(world.items)
    assert store.set_item_popularity(world.popularity_updates) == len(world.popularity_updates) - 1
    store.upsert_items(world.reloaded)
    store.upsert_users(world.users)


# -- the backends --------------------------------------------------------------------------------


@dataclass
class Pair:
    """The embedded store and a reference store holding the same world."""

    embedded: InterestStore
    reference: InterestStore

    def recommenders(self) -> tuple[Recommender, Recommender]:
        return (
            Recommender(self.embedded, settings=SETTINGS),
            Recommender(self.reference, settings=SETTINGS),
        )


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InterestStore]:
    path: Path = tmp_path_factory.mktemp("edge")
    store = InterestStore(EdgeBackend(path), dimension=DIM)
    write(store, WORLD)
    yield store
    store.close()


def reference_store(kind: str) -> tuple[InterestStore, list[str]]:
    """A reference store and the collections to drop afterwards (a server's only)."""
    if kind == "local":
        return InterestStore(ClientBackend.local(), dimension=DIM), []
    url = os.environ.get("INTEREST_TEST_QDRANT_URL")
    if not url:
        pytest.skip("INTEREST_TEST_QDRANT_URL is not set: no Qdrant server to compare with")
    api_key = os.environ.get("INTEREST_TEST_QDRANT_API_KEY") or None
    suffix = uuid.uuid4().hex[:12]
    users, items = f"congruence_users_{suffix}", f"congruence_items_{suffix}"
    backend = ClientBackend.connect(url, api_key, 10)
    store = InterestStore(backend, dimension=DIM, users_collection=users, items_collection=items)
    return store, [users, items]


@pytest.fixture(scope="module", params=["local", "server"])
def backends(request: pytest.FixtureRequest, embedded: InterestStore) -> Iterator[Pair]:
    """The embedded store against each reference (``server`` only with a URL)."""
    store, drop = reference_store(request.param)
    try:
        write(store, WORLD)
        yield Pair(embedded, store)
    finally:
        backend = store.backend
        for name in drop:
            if isinstance(backend, ClientBackend):
                backend.client.delete_collection(name)
        store.close()


# -- comparing answers ---------------------------------------------------------------------------


def tie_groups(scores: Sequence[float]) -> list[range]:
    """Positions of a descending ranking cut where consecutive scores differ by more than TIE."""
    groups, start = [], 0
    for k in range(1, len(scores) + 1):
        if k == len(scores) or scores[k - 1] - scores[k] > TIE:
            groups.append(range(start, k))
            start = k
    return groups


def assert_same_ranking(
    got: Sequence[tuple[str, float]],
    want: Sequence[tuple[str, float]],
    *,
    limit: int,
    sorted_by_score: bool,
    what: str,
) -> None:
    """Same ids in the same order (ties as sets, see the module doc), scores within 1e-4."""
    assert len(got) == len(want), f"{what}: {len(got)} items vs {len(want)}\n{got}\n{want}"
    for k, ((gid, gs), (wid, ws)) in enumerate(zip(got, want, strict=True)):
        assert abs(gs - ws) <= SCORE_TOL, f"{what}: score at {k}: {gid} {gs} vs {wid} {ws}"
    got_ids, want_ids = [i for i, _ in got], [i for i, _ in want]
    if got_ids == want_ids:
        return
    assert sorted_by_score, f"{what}: order differs\n{got_ids}\n{want_ids}"
    for group in tie_groups([s for _, s in want]):
        cut = group.stop == len(want) == limit  # the limit may split the last tie group
        if not cut:
            assert {got_ids[k] for k in group} == {want_ids[k] for k in group}, (
                f"{what}: order differs beyond ties\n{got_ids}\n{want_ids}"
            )


def assert_same_json(got: Any, want: Any, what: str) -> None:
    """Equal JSON values, but for floats, which may be one ulp apart (see FLOAT_ULPS)."""
    assert type(got) is type(want), f"{what}: {got!r} vs {want!r}"
    if isinstance(got, dict):
        assert got.keys() == want.keys(), f"{what}: keys {sorted(got)} vs {sorted(want)}"
        for key in got:
            assert_same_json(got[key], want[key], f"{what}.{key}")
    elif isinstance(got, list):
        assert len(got) == len(want), f"{what}: {got!r} vs {want!r}"
        for k, (g, w) in enumerate(zip(got, want, strict=True)):
            assert_same_json(g, w, f"{what}[{k}]")
    elif isinstance(got, float):
        assert abs(got - want) <= FLOAT_ULPS * math.ulp(want), f"{what}: {got!r} vs {want!r}"
    else:
        assert got == want, f"{what}: {got!r} vs {want!r}"


def ranking(rec: Recommendation) -> list[tuple[str, float]]:
    return [(item.item_id, item.score) for item in rec.items]


def compare_recommendations(pair: Pair, user_ids: Sequence[str], options: RecommendOptions) -> int:
    """Recommend for each user on both stores and compare; return how many items came back."""
    mine, theirs = pair.recommenders()
    total = 0
    for user_id in user_ids:
        got = mine.recommend(user_id, **options)
        want = theirs.recommend(user_id, **options)
        what = f"{user_id} {options}"
        assert got.strategy == want.strategy, what
        assert_same_ranking(
            ranking(got),
            ranking(want),
            limit=options.get("limit", 10),
            sorted_by_score=got.strategy != "personal" or options.get("diversity") is None,
            what=what,
        )
        assert got.explanation.item_sources == want.explanation.item_sources, what
        assert got.explanation.note == want.explanation.note, what
        total += len(got.items)
    return total


# -- profile reads -------------------------------------------------------------------------------


def test_users_read_back_alike(backends: Pair) -> None:
    """get_users: the same vectors (unit, within 1e-6) and the very same payloads."""
    ids = [*WORLD.user_ids, "ghost-2"]
    got, want = backends.embedded.get_users(ids), backends.reference.get_users(ids)
    assert set(got) == set(want) == {u for u, _, _ in WORLD.users}
    written = {u: v for u, v, _ in WORLD.users}
    for user_id, stored in got.items():
        ref = want[user_id]
        assert set(stored.vectors) == set(ref.vectors) == set(written[user_id]), user_id
        for name, vec in stored.vectors.items():
            assert np.allclose(vec, ref.vectors[name], atol=VECTOR_TOL, rtol=0), (user_id, name)
            assert np.allclose(vec, written[user_id][name], atol=VECTOR_TOL, rtol=0)
        assert_same_json(stored.payload, ref.payload, user_id)


def test_items_read_back_alike(backends: Pair) -> None:
    """Item vectors, the popularity updates and the live-field rule on re-load, the sample the
    catalog centroid is computed from."""
    ids = [i for i, _, _ in WORLD.items]
    got, want = backends.embedded.get_item_vectors(ids), backends.reference.get_item_vectors(ids)
    assert set(got) == set(want) == set(ids)
    for item_id, vec in got.items():
        assert np.allclose(vec, want[item_id], atol=VECTOR_TOL, rtol=0), item_id
    payloads = []
    for store in (backends.embedded, backends.reference):
        records, _ = store.backend.scroll(store.items_collection, limit=len(ids) + 10)
        payloads.append({r.payload["item_id"]: r.payload for r in records if r.payload})
    assert_same_json(payloads[0], payloads[1], "item payloads")
    assert "no-such-item" not in payloads[0]
    reloaded = {i for i, _, _ in WORLD.reloaded}
    for item_id in reloaded & set(WORLD.popularity_updates):
        value = WORLD.popularity_updates[item_id]
        assert_same_json(payloads[0][item_id]["popularity"], value, item_id)
    sample = [
        [(pid, vec.tolist()) for pid, vec in store.sample_item_vectors(40)]
        for store in (backends.embedded, backends.reference)
    ]
    assert [pid for pid, _ in sample[0]] == [pid for pid, _ in sample[1]]


# -- recommend -----------------------------------------------------------------------------------

EXCLUDED = WORLD.central
YEARS = list(range(1990, 2006))

# Users per case: local mode evaluates formulas in Python (~40 ms a call), so each case asks the
# users its feature concerns (``defaults`` asks everyone); every pool has a cold-start user.
# Patterns (PATTERNS[i % 10]): u00 short_term, u01 +long_term, u02 +search, u03 long_term/search/
# negative, u04-u06 one/two/four clusters, u07 short_term/clusters/negative, u08 nearly all, u09
# search/clusters; u16 has four clusters with no stored weights (equal shares).
MIXED = ["u02", "u06", "u08", "u13", "u19", "u_empty"]
DIMENSIONAL = ["u00", "u01", "u02", "u03", "u11", "u12", "ghost"]
CLUSTERED = ["u05", "u06", "u08", "u09", "u16", "u17", "u_negative_only"]
NEGATIVE = ["u03", "u07", "u08", "u13", "u17", "u18", "u_negative_only"]

CASES: dict[str, tuple[RecommendOptions, list[str]]] = {
    "defaults": ({}, WORLD.user_ids),
    "limit_1": ({"limit": 1}, MIXED),
    "limit_40": ({"limit": 40}, MIXED),
    "dimension_short_term": ({"dimensions": ["short_term"]}, DIMENSIONAL),
    "dimension_interests": ({"dimensions": ["interests"]}, CLUSTERED),
    "dimensions_long_term_search": ({"dimensions": ["long_term", "search"]}, DIMENSIONAL),
    "dimension_one_cluster": ({"dimensions": ["interest_1"]}, CLUSTERED),
    "dimension_weights": (
        {"weights": {"short_term": 0.2, "long_term": 2.0, "search": 0.5}},
        DIMENSIONAL,
    ),
    "cluster_weights": (
        {"weights": {"interests": 3.0, "interest_1": 2.5, "interest_0": 0.0}},
        CLUSTERED,
    ),
    "no_negative": ({"negative_weight": 0.0}, NEGATIVE),
    "strong_negative": ({"negative_weight": 3.0}, NEGATIVE),
    "no_popularity_prior": ({"popularity_weight": 0.0}, MIXED),
    "strong_popularity_prior": ({"popularity_weight": 1.5}, MIXED),
    "no_popularity_field": ({"popularity_field": None}, MIXED),
    "keep_recent": ({"exclude_recent": False}, MIXED),
    "exclude_items": ({"exclude_items": EXCLUDED}, MIXED),
    "filter_keyword": ({"filters": {"category": "film"}}, MIXED),
    "filter_int": ({"filters": {"year": 2001}}, MIXED),
    "filter_float": ({"filters": {"rating": 4.5}}, MIXED),
    "filter_bool": ({"filters": {"new": True}}, MIXED),
    "filter_str_list": ({"filters": {"tags": ["indie", "live"]}}, MIXED),
    "filter_int_list": ({"filters": {"year": YEARS}}, MIXED),
    "filter_matches_nothing": ({"filters": {"category": "opera"}}, MIXED),
    "filters_combined": ({"filters": {"category": ["jazz", "travel"], "year": YEARS}}, MIXED),
    "mmr_0": ({"diversity": 0.0}, MIXED),
    "mmr_0.3": ({"diversity": 0.3}, CLUSTERED),
    "mmr_0.7_limit_20": ({"diversity": 0.7, "limit": 20}, NEGATIVE),
    "mmr_1": ({"diversity": 1.0}, MIXED),
    "mmr_filtered_excluded": (
        {"diversity": 0.5, "filters": {"tags": ["classic", "new", "award"]}},
        MIXED,
    ),
    "everything": (
        {
            "limit": 15,
            "weights": {"interest_2": 4.0, "short_term": 0.5},
            "negative_weight": 1.5,
            "popularity_weight": 0.6,
            "filters": {"rating": 3.0, "tags": ["classic", "remaster", "short"]},
            "exclude_items": EXCLUDED,
            "exclude_recent": False,
        },
        NEGATIVE,
    ),
    "everything_mmr": (
        {
            "limit": 12,
            "dimensions": ["short_term", "interests", "search"],
            "negative_weight": 1.0,
            "filters": {"year": list(range(1980, 2020)), "category": ["rock", "film", "science"]},
            "exclude_items": EXCLUDED,
            "diversity": 0.4,
        },
        CLUSTERED,
    ),
}
#: Cases that need not change any answer relative to the defaults at the same limit.
NEUTRAL = {"defaults", "limit_1", "limit_40"}


@pytest.mark.parametrize(("name", "options", "users"), [(n, *c) for n, c in CASES.items()])
def test_recommendations_agree(
    backends: Pair, name: str, options: RecommendOptions, users: list[str]
) -> None:
    """Every user of the case (cold start included) gets the same answer from both engines, and
    the option really changes some answer (so no case passes vacuously)."""
    compare_recommendations(backends, users, options)
    mine, _ = backends.recommenders()
    limit = options.get("limit", 10)
    answers = [(mine.recommend(u, **options), mine.recommend(u, limit=limit)) for u in users]
    if name != "filter_matches_nothing":
        assert any(a.strategy == "personal" and a.items for a, _ in answers)
    if name not in NEUTRAL:
        assert any(ranking(a) != ranking(b) for a, b in answers), f"{name} changed nothing"


def test_cold_start_orders_popular_items_alike(backends: Pair) -> None:
    """Unknown user, user without vectors, negative only, a requested dimension the user lacks:
    the popular-items fallback, with filters and exclusions, in the same order."""
    mine, _ = backends.recommenders()
    for user_id in ("ghost", "u_empty", "u_negative_only"):
        rec = mine.recommend(user_id, limit=20)
        assert rec.strategy == "fallback_popular", user_id
        scores = [s for _, s in ranking(rec)]
        assert len(scores) == 20 and scores == sorted(scores, reverse=True) and min(scores) >= 0
    assert mine.recommend("u00", dimensions=["search"]).strategy == "fallback_popular"
    cold = ["ghost", "u_empty", "u_negative_only", "u00", "u04"]
    cases: list[RecommendOptions] = [
        {"limit": 25, "dimensions": ["search"]},
        {"limit": 5, "dimensions": ["search"], "exclude_items": EXCLUDED},
        {"dimensions": ["search"], "exclude_recent": False},
        {"dimensions": ["search"], "filters": {"category": ["rock", "film"], "rating": 3.5}},
        {"dimensions": ["search"], "filters": {"tags": ["indie"], "year": YEARS}},
        {"dimensions": ["search"], "filters": {"new": False, "category": "jazz"}},
        {"dimensions": ["search"], "filters": {"category": "opera"}},
        {"dimensions": ["search"], "popularity_field": None},
    ]
    for options in cases:
        compare_recommendations(backends, cold, options)


def test_popular_fallback_needs_a_range_index(
    backends: Pair, request: pytest.FixtureRequest
) -> None:
    """Ordering by a field without a range index: Qdrant refuses (``fallback_empty`` with the
    engine's reason), as the embedded engine does; local mode has no indexes and orders anyway."""
    mine, _ = backends.recommenders()
    rec = mine.recommend("ghost", popularity_field="rating")
    assert rec.strategy == "fallback_empty" and "No range index" in rec.explanation.note
    if backends.reference.backend.kind == "local":
        request.applymarker(
            pytest.mark.xfail(
                strict=True,
                raises=AssertionError,
                reason="qdrant-client local mode orders by a field without a range index "
                "(a server and qdrant-edge refuse): the reference, not the engine, deviates",
            )
        )
    compare_recommendations(backends, ["ghost"], {"popularity_field": "rating"})


def test_float_filter_on_a_17_digit_value(backends: Pair, request: pytest.FixtureRequest) -> None:
    """An exact-value float filter on an unindexed field whose value has 17 significant digits
    (see FLOAT_ULPS): the embedded engine's payload storage holds it one ulp off, so the filter
    written with the original value finds nothing there (an indexed field would match: the
    index keeps the exact double)."""
    stored = {}
    for store in (backends.embedded, backends.reference):
        records, _ = store.backend.scroll(store.items_collection, limit=1000)
        stored[store.backend.kind] = {
            str(r.payload["item_id"]): r.payload for r in records if r.payload is not None
        }
    kind = backends.reference.backend.kind
    shifted = [
        (item_id, payload["score"])
        for item_id, payload in stored[kind].items()
        if payload["score"] != stored["embedded"][item_id]["score"]
        and isinstance(payload.get("popularity"), float)
        and payload["popularity"] >= 0
    ]
    assert shifted, "no payload float came back changed: the quirk is gone, update FLOAT_ULPS"
    request.applymarker(
        pytest.mark.xfail(
            strict=kind == "local",
            raises=AssertionError,
            reason="qdrant-edge 0.9 keeps payload floats of 16-17 significant digits up to one "
            "ulp off in its payload storage (serde_json's default float parsing), so an exact "
            "float filter on an unindexed field misses the written value; qdrant-client keeps "
            "the exact double",
        )
    )
    _, value = shifted[0]
    compare_recommendations(backends, ["ghost"], {"filters": {"score": value}})
