"""models.clusters: assignment, opening, recycling, merging, labels, weights, persistence."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from models.clusters import ClusterSpec, InterestClusters, LabelVocabulary, slot_vector_name
from models.interests import Observation, StateError

T0 = 1_700_000_000_000
DIM = 8
WEEK_MS = 7 * 24 * 3600 * 1000


def e(i: int) -> np.ndarray:
    v = np.zeros(DIM)
    v[i] = 1.0
    return v


def near(i: int, j: int = 7, eps: float = 0.1) -> np.ndarray:
    """A unit vector close to e(i) (cosine ≈ 0.995)."""
    return e(i) + eps * e(j)


def click(vec: np.ndarray, ts: int = T0, tags: tuple[str, ...] = (), w: float = 1.0) -> Observation:
    return Observation(ts, w, "click", vec, tags)


def fold(observations: list[Observation], spec: ClusterSpec | None = None) -> InterestClusters:
    clusters = InterestClusters(spec)
    for o in observations:
        clusters.update(o)
    return clusters


def counts(c: InterestClusters) -> list[int | None]:
    return [None if s is None else s.count for s in c.slots]


def test_default_spec() -> None:
    spec = ClusterSpec()
    assert (spec.k, spec.half_life_s, spec.max_tags_per_cluster) == (4, 7 * 24 * 3600, 16)
    assert 0.4 <= spec.threshold <= 0.5


@pytest.mark.parametrize(
    "kw", [{"k": 0}, {"half_life_s": 0}, {"threshold": 1.5}, {"recycle_share": 1.0}]
)
def test_spec_validation(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        ClusterSpec(**kw)  # type: ignore[arg-type]


def test_two_separated_topics_go_to_two_slots() -> None:
    c = fold(
        [
            click(near(0), tags=("deep learning",)),
            click(near(1), tags=("cooking",)),
            click(near(0, 6), tags=("deep learning", "gan"), w=2.0),
            click(e(0), tags=("deep learning",)),
        ]
    )
    assert counts(c) == [3, 1, None, None]
    assert c.labels() == ["deep learning", "cooking", None, None]
    assert c.weights() == pytest.approx([0.8, 0.2, 0.0, 0.0])
    assert c.profile() == [
        {"label": "deep learning", "weight": 0.8},
        {"label": "cooking", "weight": 0.2},
    ]
    slot = c.slots[0]
    assert slot is not None
    assert slot.ranked_tags() == [("deep learning", 4.0), ("gan", 2.0)]
    assert set(c.vectors()) == {"interest_0", "interest_1"}


def test_ties_go_to_the_lower_slot() -> None:
    c = fold([click(e(0)), click(e(1)), click(e(0) + e(1))])
    assert counts(c) == [2, 1, None, None]


def test_merge_most_similar_pair_when_k_exceeded() -> None:
    # A and D are related (cosine 0.4 < threshold), C is far from both; B is new.
    a, d = e(0), 0.4 * e(0) + math.sqrt(1 - 0.16) * e(1)
    spec = ClusterSpec(k=3)
    c = fold(
        [
            click(a, tags=("a",)),
            click(e(2), tags=("c",)),
            click(d, tags=("d",)),
            click(e(3), tags=("b",)),
        ],
        spec,
    )
    assert counts(c) == [2, 1, 1]
    merged, newest = c.slots[0], c.slots[2]
    assert merged is not None and newest is not None
    assert dict(merged.ranked_tags()) == {"a": 1.0, "d": 1.0}
    assert merged.mass == 2.0
    np.testing.assert_allclose(merged.get(), (a + d) / np.linalg.norm(a + d))  # type: ignore[arg-type]
    np.testing.assert_allclose(newest.get(), e(3))  # type: ignore[arg-type]
    assert c.labels() == ["a", "c", "b"]  # "a" < "d" on a tie


def test_merge_decays_both_slots_to_the_newer_time() -> None:
    spec = ClusterSpec(k=2, recycle_share=0.0)
    c = fold([click(e(0), T0, ("x",)), click(e(1), T0 + WEEK_MS, ("y",)), click(e(2), T0)], spec)
    merged = c.slots[0]
    assert merged is not None
    assert merged.ref_ts_ms == T0 + WEEK_MS
    assert merged.mass == pytest.approx(1.5)
    assert dict(merged.ranked_tags()) == pytest.approx({"x": 0.5, "y": 1.0})


def test_faded_slot_is_recycled_before_merging() -> None:
    spec = ClusterSpec(k=2)
    c = fold(
        [
            click(e(0), T0, ("old",)),
            click(e(1), T0 + 10 * WEEK_MS, ("b",)),  # share of "old" is now ~2^-10
            click(e(2), T0 + 10 * WEEK_MS, ("c",)),
        ],
        spec,
    )
    assert counts(c) == [1, 1]
    assert c.labels() == ["c", "b"]


def test_k_one_takes_everything() -> None:
    c = fold([click(e(0)), click(e(1)), click(e(2))], ClusterSpec(k=1))
    assert counts(c) == [3]
    assert c.profile() == [{"label": "interest 0", "weight": 1.0}]


def test_non_positive_events_are_ignored() -> None:
    c = fold([click(e(0), w=-1.0), click(e(0), w=0.0)])
    assert counts(c) == [None] * 4 and c.profile() == [] and c.vectors() == {}


def test_labels_are_distinct_heaviest_first() -> None:
    c = fold(
        [
            click(e(0), tags=("python", "web")),
            click(e(1), tags=("python", "data")),
            click(e(1), tags=("data",)),
        ]
    )
    # Slot 1 is heavier and takes "data" (its top tag); slot 0 keeps "python".
    assert c.labels()[:2] == ["python", "data"]
    c = fold([click(e(0), tags=("python",)), click(e(1), tags=("python",), w=2.0)])
    # Two apart interests with the same only tag: the lighter is numbered, not "interest 0".
    assert c.labels()[:2] == ["python (2)", "python"]
    c = fold([click(e(0), tags=("python",)), click(e(1), tags=("python",)), click(e(2))])
    assert sorted(label for label in c.labels() if label) == ["interest 2", "python", "python (2)"]


def test_vocabulary_label_for_tagless_slot() -> None:
    vocab = LabelVocabulary.from_mapping({"cooking": e(1), "deep learning": e(0) + 0.2 * e(3)})
    c = fold([click(near(0)), click(e(1), tags=("recipes",), w=3.0)])
    assert c.labels() == ["interest 0", "recipes", None, None]
    assert c.labels(vocab) == ["deep learning", "recipes", None, None]
    assert [p["label"] for p in c.profile(vocab)] == ["recipes", "deep learning"]
    # The nearest name is taken only once.
    c = fold([click(e(1), w=2.0), click(0.5 * e(0) + e(1))], ClusterSpec(threshold=0.95))
    slot = c.slots[1]
    assert slot is not None and vocab.nearest(slot.get()) == "cooking"  # type: ignore[arg-type]
    assert c.labels(vocab)[:2] == ["cooking", "deep learning"]


def test_vocabulary_validation() -> None:
    with pytest.raises(ValueError):
        LabelVocabulary(("a", "b"), np.eye(3))
    with pytest.raises(ValueError):
        LabelVocabulary(("a",), np.zeros((1, 3)))
    empty = LabelVocabulary.from_mapping({})
    assert empty.nearest(e(0)) is None


def test_tags_are_capped_and_decayed() -> None:
    spec = ClusterSpec(max_tags_per_cluster=3)
    c = fold(
        [
            click(e(0), T0, ("a", "b", "c", "d"), w=1.0),
            click(e(0), T0 + WEEK_MS, ("d", "e"), w=1.0),
        ],
        spec,
    )
    slot = c.slots[0]
    assert slot is not None
    # After the first event: a, b, c (d loses the name tie). A week later they halve to 0.5;
    # d and e come in at 1.0 and push out the lightest ("c" loses the tie with "a", "b").
    assert slot.ranked_tags() == [("d", 1.0), ("e", 1.0), ("a", 0.5)]


def test_payload_round_trip_and_shrinking_k() -> None:
    c = fold(
        [
            click(e(0), tags=("a",), w=3.0),
            click(e(1), tags=("b",), w=2.0),
            click(0.3 * e(1) + e(2), tags=("c",)),
        ]
    )
    payload = json.loads(json.dumps(c.to_payload(), allow_nan=False))
    assert [p["slot"] for p in payload] == [0, 1, 2]
    assert payload[0]["tags"] == [["a", 3.0]] and payload[0]["label"] == "a"
    assert payload[0]["weight"] == pytest.approx(0.5)
    vectors = {k: v.tolist() for k, v in c.vectors().items()}
    back = InterestClusters.from_stored(payload, vectors, ClusterSpec())
    assert counts(back) == counts(c) and back.labels() == c.labels()
    assert back.weights() == c.weights()
    smaller = InterestClusters.from_stored(payload, vectors, ClusterSpec(k=2))
    assert counts(smaller) == [1, 2]  # b and c (the most similar) merged
    assert smaller.labels() == ["a", "b"]
    assert sum(s.mass for s in smaller.slots if s is not None) == pytest.approx(6.0)


def test_slot_left_free_between_stored_slots_stays_free() -> None:
    payload = [{"slot": 2, "mass": 1.0, "norm": 1.0, "ref_ts_ms": T0, "count": 1, "tags": []}]
    c = InterestClusters.from_stored(payload, {slot_vector_name(2): e(0)})
    assert counts(c) == [None, None, 1, None]
    c.update(click(e(1)))
    assert counts(c) == [1, None, 1, None]


@pytest.mark.parametrize(
    "payload",
    [
        [{"slot": -1, "mass": 1.0, "norm": 1.0, "ref_ts_ms": T0, "count": 1, "tags": []}],
        [{"slot": 0, "mass": 1.0, "norm": 1.0, "ref_ts_ms": T0, "count": 1, "tags": [["a"]]}],
        [{"slot": 0, "mass": 1.0, "norm": 1.0, "ref_ts_ms": T0, "count": 1, "tags": {"a": 1}}],
        [{"slot": 0, "mass": 1.0, "norm": 1.0, "ref_ts_ms": T0, "count": 1}] * 2,
        [{"slot": 1, "mass": 1.0, "norm": 1.0, "ref_ts_ms": T0, "count": 1}],  # no vector
        ["nope"],
    ],
)
def test_bad_cluster_payload(payload: list[object]) -> None:
    with pytest.raises(StateError):
        InterestClusters.from_stored(payload, {"interest_0": e(0)})  # type: ignore[arg-type]
