"""ProfileSettings / RecommendSettings: the interest spec and recommend fusion from settings, and
recommend's centering on the catalog mean."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from models.profile import InterestSpec
from models.query_plan import centered_queries, mean_lengths
from models.recommend import (
    DEFAULT_CENTERING,
    DEFAULT_NEGATIVE_WEIGHT,
    DEFAULT_POPULARITY_WEIGHT,
    Recommender,
    catalog_centroid,
)
from models.settings import ProfileSettings, RecommendSettings
from models.store import InterestStore

OpenStore = Callable[..., InterestStore]
"""The ``edge_store`` fixture (tests/conftest.py): embedded stores in ``tmp_path``."""


def test_default_profile_settings_give_the_library_spec() -> None:
    spec, lib = ProfileSettings().spec(), InterestSpec()
    assert spec.dimensions == lib.dimensions
    assert spec.clusters == lib.clusters
    assert spec.vector_names() == lib.vector_names()


def test_profile_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTEREST_PROFILE_SHORT_TERM_HALF_LIFE_S", "300")
    monkeypatch.setenv("INTEREST_PROFILE_CLUSTER_K", "8")
    monkeypatch.setenv("INTEREST_PROFILE_CLUSTER_THRESHOLD", "0.5")
    spec = ProfileSettings().spec()
    halves = {d.name: d.half_life_s for d in spec.dimensions}
    assert halves["short_term"] == 300.0
    assert halves["long_term"] == InterestSpec().dimensions[1].half_life_s
    assert spec.clusters.k == 8 and spec.clusters.threshold == 0.5
    assert spec.vector_names()[-1] == "interest_7"
    # Event types per dimension are the library's.
    assert [d.event_types for d in spec.dimensions] == [
        d.event_types for d in InterestSpec().dimensions
    ]


@pytest.mark.parametrize(
    ("name", "value"),
    [("CLUSTER_K", "0"), ("SHORT_TERM_HALF_LIFE_S", "0"), ("CLUSTER_THRESHOLD", "1.5")],
)
def test_profile_settings_reject_nonsense(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(f"INTEREST_PROFILE_{name}", value)
    with pytest.raises(ValueError):
        ProfileSettings()


def test_recommend_settings_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    s = RecommendSettings()
    assert (s.negative_weight, s.popularity_weight, s.centering) == (
        DEFAULT_NEGATIVE_WEIGHT, DEFAULT_POPULARITY_WEIGHT, DEFAULT_CENTERING,
    )  # fmt: skip
    monkeypatch.setenv("INTEREST_RECOMMEND_DIMENSION_WEIGHTS", '{"short_term": 3.0}')
    monkeypatch.setenv("INTEREST_RECOMMEND_POPULARITY_FIELD", "")
    monkeypatch.setenv("INTEREST_RECOMMEND_CENTERING", "0")
    s = RecommendSettings()
    assert s.dimension_weights == {"short_term": 3.0}
    assert s.popularity_field is None and s.centering == 0.0
    monkeypatch.setenv("INTEREST_RECOMMEND_DIMENSION_WEIGHTS", '{"short_term": -1}')
    with pytest.raises(ValueError):
        RecommendSettings()


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def test_mean_lengths_and_centered_queries() -> None:
    payload = {
        "state": {
            "dimensions": {"short_term": {"mass": 2.0, "norm": 1.0}, "bad": {"mass": 0}},
            "interests": [{"slot": 1, "mass": 4.0, "norm": 4.0}, {"slot": "x"}],
        }
    }
    assert mean_lengths(payload) == {"short_term": 0.5, "interest_1": 1.0}
    assert mean_lengths({}) == {}
    u = unit(np.array([1.0, 1.0, 0.0]))
    c = np.array([0.0, 0.4, 0.0])
    plain = centered_queries({"short_term": u}, payload, None, 1.0)
    assert np.allclose(plain["short_term"], u)
    q = centered_queries({"short_term": u, "long_term": u}, payload, c, 1.0)
    assert np.allclose(q["short_term"], unit(0.5 * u - c))
    assert np.allclose(q["long_term"], unit(u - c))  # no state: the mean taken as unit length
    assert np.allclose(centered_queries({"short_term": u}, payload, c, 0.0)["short_term"], u)


def test_recommend_centres_queries_on_the_catalog_mean(edge_store: OpenStore) -> None:
    """Every item shares a strong common direction; the user leans towards topic 1. Raw cosine
    ranks the bland, most common items first; centred, topic 1 leads."""
    common = np.array([1.0, 0.0, 0.0, 0.0])
    items = [
        ("bland", unit(common + 0.05 * np.array([0, 1.0, 1.0, 0]))),
        ("topic1-a", unit(common + 0.6 * np.array([0, 1.0, 0, 0]))),
        ("topic1-b", unit(common + 0.5 * np.array([0, 1.0, 0.2, 0]))),
        ("topic2", unit(common + 0.6 * np.array([0, 0, 1.0, 0]))),
        ("topic3", unit(common + 0.6 * np.array([0, 0, 0, 1.0]))),
    ]
    store = edge_store(4)
    store.ensure_collections(4, ["short_term", "negative"])
    store.upsert_items([(i, v, {}) for i, v in items])
    user = unit(common + 0.25 * np.array([0, 1.0, 0, 0]))
    store.upsert_users([("u", {"short_term": user}, {})])
    centroid = catalog_centroid(store)
    assert centroid is not None
    assert np.allclose(centroid, np.mean([v for _, v in items], axis=0))

    def top(centering: float) -> list[str]:
        settings = RecommendSettings(centering=centering, popularity_weight=0.0)
        rec = Recommender(store, settings=settings).recommend("u", limit=5)
        return [i.item_id for i in rec.items]

    assert top(0.0)[0] == "bland"
    assert top(1.0)[0] == "topic1-a"
    rec = Recommender(store, settings=RecommendSettings(popularity_weight=0.0))
    answer = rec.recommend("u", limit=5)
    assert "centred" in answer.explanation.note
    # The score is the cosine with the centred query.
    q = unit(user - centroid)
    by_id = dict(items)
    for item in answer.items:
        assert abs(item.score - float(by_id[item.item_id] @ q)) < 1e-5


def test_centroid_absent_without_items_and_recommender_reads_settings(
    monkeypatch: pytest.MonkeyPatch, edge_store: OpenStore
) -> None:
    store = edge_store(4, items_collection="nothing")
    assert catalog_centroid(store) is None
    store.ensure_collections(4, ["short_term"])  # the collection exists but holds no item
    assert catalog_centroid(store) is None
    monkeypatch.setenv("INTEREST_RECOMMEND_NEGATIVE_WEIGHT", "0.25")
    monkeypatch.setenv("INTEREST_RECOMMEND_DIMENSION_WEIGHTS", '{"long_term": 0.0}')
    r = Recommender(store)
    assert r.settings.negative_weight == 0.25
    assert r.weights == {"long_term": 0.0}
    assert Recommender(store, weights={"long_term": 1.0}).weights == {"long_term": 1.0}
