"""The collaborative dimension's math (models/collab.py): engagement lists, co-engagement, item
vectors, the cold map and the user's query."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.collab import (
    CoEngagement,
    ColdMap,
    CollabSpec,
    Entry,
    engaged_from_payload,
    engaged_to_payload,
    engaged_update,
    item_embedding,
    user_query,
)

NO_DECAY = 1e12


def _gram(lists: list[list[Entry]], spec: CollabSpec) -> tuple[tuple[str, ...], np.ndarray]:
    co = CoEngagement(spec)
    for entries in lists:
        co.count(entries)
    items = co.freeze()
    for entries in lists:
        co.add(entries)
    return items, co.gram


events_strategy = st.lists(
    st.tuples(
        st.sampled_from("abcdefgh"), st.integers(0, 10**6), st.sampled_from([-1.0, 0.5, 2.0])
    ),
    max_size=40,
)


@given(events_strategy, st.integers(1, 10))
@settings(max_examples=200, deadline=None)
def test_an_engagement_list_does_not_depend_on_how_events_are_cut_into_jobs(
    events: list[tuple[str, int, float]], cut: int
) -> None:
    """The fold applies jobs in event order: any cut gives the list one job gives."""
    whole = engaged_update([], events, cap=5)
    parts: list[Entry] = []
    for start in range(0, len(events), cut):
        stored = engaged_to_payload(parts)  # through the payload's JSON form, as stored
        parts = engaged_update(
            engaged_from_payload({"engaged": stored}), events[start : start + cut], 5
        )
    assert parts == whole
    assert len(whole) <= 5 and len({i for i, _, _ in whole}) == len(whole)


def test_the_gram_is_the_co_engagement_count_of_positive_entries() -> None:
    """Without decay, G = XᵀX over the positive entries (X: users × items, binary)."""
    rng = np.random.default_rng(3)
    items = [f"i{k}" for k in range(12)]
    x = rng.random((30, 12)) < 0.3
    neg = rng.random((30, 12)) < 0.1
    lists = [
        [(items[k], 1000 * k, 1.0) for k in np.flatnonzero(x[u])]
        + [(items[k], 5, -1.0) for k in np.flatnonzero(neg[u] & ~x[u])]
        for u in range(30)
    ]
    order, gram = _gram(lists, CollabSpec(pair_half_life_s=NO_DECAY))
    cols = [items.index(i) for i in order]
    xb = x[:, cols].astype(float)
    assert np.allclose(gram, xb.T @ xb)
    # Shuffled users: the same matrix (what a rebuild reads does not depend on point order).
    shuffled = [lists[k] for k in rng.permutation(30)]
    assert np.allclose(_gram(shuffled, CollabSpec(pair_half_life_s=NO_DECAY))[1], gram)


def test_users_without_positive_engagement_give_an_empty_matrix_not_an_error() -> None:
    # Text-only users (searches) and negative-only lists: nothing to count, and the refresh of
    # a store holding only such users must not fail.
    order, gram = _gram([[], [("i1", 1000, -1.0)]], CollabSpec())
    assert order == () and gram.shape == (0, 0)


def test_pairs_decay_from_the_later_engagement_and_the_matrix_stays_bounded() -> None:
    day = 86_400_000
    lists = [  # user u engaged "hot" and "i<u>" together, u days before the newest engagement
        [("hot", (100 - u) * day, 1.0), (f"i{u}", (100 - u) * day, 1.0)] for u in range(50)
    ]
    items, gram = _gram(lists, CollabSpec(pair_half_life_s=86_400.0, max_items=10))
    assert items[0] == "hot" and len(items) == 10 and gram.shape == (10, 10)  # bounded
    assert gram[0, 0] == pytest.approx(sum(2.0**-u for u in range(50)))
    for k, item in enumerate(items[1:], start=1):
        age_days = int(item[1:])
        assert gram[0, k] == gram[k, k] == pytest.approx(2.0**-age_days)
    # A late engagement of an old item forms its pair at the later time: undecayed.
    late = [*lists, [("hot", 100 * day, 1.0), ("i30", 0, 1.0)]]
    items, gram = _gram(late, CollabSpec(pair_half_life_s=86_400.0, max_items=2))
    assert items == ("hot", "i30") and gram[0, 1] == pytest.approx(1.0 + 2.0**-30)


def test_item_vectors_give_the_ease_item_weights_at_full_rank() -> None:
    """``e_i·e_j = −λ·(G + λI)⁻¹_ij`` off the diagonal when every eigenvector is kept."""
    rng = np.random.default_rng(5)
    x = (rng.random((40, 8)) < 0.4).astype(float)
    gram, lam = x.T @ x, 7.0
    e = item_embedding(gram, rank=8, shrinkage=lam)
    expected = -lam * np.linalg.inv(gram + lam * np.eye(8))
    off = ~np.eye(8, dtype=bool)
    assert np.allclose((e @ e.T)[off], expected[off])
    # Deterministic: the same matrix gives the same vectors, signs included.
    assert np.array_equal(item_embedding(gram, 3, lam), item_embedding(gram.copy(), 3, lam))


def test_little_evidence_gives_short_vectors() -> None:
    """Shrinkage: the same co-engagement pattern seen by 100× fewer users gives vectors about
    ``sqrt(s/(s+λ))`` as long, so its scores fade next to the text's."""
    rng = np.random.default_rng(2)
    x = (rng.random((500, 20)) < 0.3).astype(float)
    big = np.linalg.norm(item_embedding(x.T @ x, 4, 1000.0), axis=1).mean()
    small = np.linalg.norm(item_embedding(x[:5].T @ x[:5], 4, 1000.0), axis=1).mean()
    assert small < 0.2 * big


def test_the_cold_map_recovers_a_linear_relation() -> None:
    rng = np.random.default_rng(1)
    content = rng.standard_normal((200, 6))
    truth = rng.standard_normal((6, 3))
    cold = ColdMap(ridge=1e-9)
    cold.add(content[:100], content[:100] @ truth + 0.5)
    cold.add(content[100:150], content[100:150] @ truth + 0.5)  # batches accumulate
    assert np.allclose(cold.predict(content[150:]), content[150:] @ truth + 0.5)
    with pytest.raises(ValueError):
        ColdMap(1.0).predict(content)


def test_the_query_is_a_decayed_weighted_mean_of_positive_items() -> None:
    hour = 3_600_000
    vectors = {"a": np.array([2.0, 0.0]), "b": np.array([0.0, 2.0]), "c": np.array([5.0, 5.0])}
    entries = [("a", 0, 1.0), ("b", hour, 1.0), ("c", hour, -1.0), ("z", hour, 1.0)]
    q = user_query(entries, vectors, half_life_s=3600.0)
    assert q is not None and np.allclose(q, [2 / 3, 4 / 3])  # a at half weight; c, z ignored
    assert user_query([("c", 0, -1.0)], vectors, 3600.0) is None


def test_a_spec_refuses_nonsense() -> None:
    for bad in ({"rank": 0}, {"shrinkage": 0.0}, {"max_items": 1}, {"cold_scale": -1.0},
                {"pair_half_life_s": float("nan")}):  # fmt: skip
        with pytest.raises(ValueError):
            CollabSpec(**bad)  # type: ignore[arg-type]
