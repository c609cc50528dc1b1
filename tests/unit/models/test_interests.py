"""models.interests: decay, routing, order independence, persistence, numerical robustness."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from models.interests import (
    DAY_S,
    HOUR_S,
    DimensionSpec,
    DimensionState,
    Observation,
    StateError,
    decay_factor,
    default_dimensions,
)
from models.profile import UserInterests, batch_compute

T0 = 1_700_000_000_000
DIM = 8
WEIGHTS = {"view": 0.5, "click": 1.0, "read": 1.0, "search": 1.0, "like": 2.0, "share": 2.0}
WEIGHTS |= {"purchase": 3.0, "dislike": -1.0, "skip": -0.5}


def e(i: int, dim: int = DIM) -> np.ndarray:
    v = np.zeros(dim)
    v[i] = 1.0
    return v


def obs(ts: int, type_: str = "click", vec: np.ndarray | None = None, **kw: object) -> Observation:
    weight = kw.pop("weight", WEIGHTS[type_])
    return Observation(ts, weight, type_, e(0) if vec is None else vec, **kw)  # type: ignore[arg-type]


def dims() -> dict[str, DimensionSpec]:
    return {d.name: d for d in default_dimensions()}


# -- spec and observation ------------------------------------------------------------------------
def test_default_dimensions_match_design() -> None:
    d = dims()
    assert list(d) == ["short_term", "long_term", "search", "negative"]
    assert d["short_term"].half_life_s == HOUR_S and d["short_term"].event_types is None
    assert d["long_term"].half_life_s == 30 * DAY_S
    assert d["long_term"].event_types == frozenset({"like", "share", "purchase", "read"})
    assert d["search"].half_life_s == DAY_S and d["search"].event_types == frozenset({"search"})
    assert d["negative"].half_life_s == 7 * DAY_S and d["negative"].negative
    assert d["negative"].event_types == frozenset({"dislike", "skip"})


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan])
def test_spec_rejects_bad_half_life(bad: float) -> None:
    with pytest.raises(ValueError):
        DimensionSpec("x", bad)


def test_observation_normalises_and_freezes_vector() -> None:
    o = Observation(T0, 1.0, "click", np.array([3.0, 4.0], dtype=np.float32), ["a"])  # type: ignore[arg-type]
    assert o.vector.dtype == np.float64
    np.testing.assert_allclose(o.vector, [0.6, 0.8])
    assert o.tags == ("a",)
    with pytest.raises(ValueError):
        o.vector[0] = 1.0


@pytest.mark.parametrize(
    "vec", [np.zeros(3), np.array([1.0, np.nan]), np.array([[1.0, 0.0]]), np.array([])]
)
def test_observation_rejects_bad_vectors(vec: np.ndarray) -> None:
    with pytest.raises(ValueError):
        Observation(T0, 1.0, "click", vec)


def test_observation_rejects_bad_weight_and_ts() -> None:
    with pytest.raises(ValueError):
        Observation(T0, math.inf, "click", e(0))
    with pytest.raises(TypeError):
        Observation(1.5, 1.0, "click", e(0))  # type: ignore[arg-type]


# -- decay ---------------------------------------------------------------------------------------
def test_decay_factor() -> None:
    assert decay_factor(0, 10) == 1.0
    assert decay_factor(-5, 10) == 1.0
    assert decay_factor(10_000, 10) == pytest.approx(0.5)
    assert decay_factor(20_000, 10) == pytest.approx(0.25)
    assert decay_factor(10**15, 1) == 0.0


def test_event_one_half_life_older_carries_half_the_weight() -> None:
    state = DimensionState(dims()["short_term"])
    h_ms = int(HOUR_S * 1000)
    state.update(obs(T0, vec=e(0)))
    state.update(obs(T0 - h_ms, vec=e(1)))  # older, arrives later
    assert state.ref_ts_ms == T0
    assert state.mass == pytest.approx(1.5)
    m = state.sum_vector()
    assert m is not None
    np.testing.assert_allclose(m[:2], [1.0, 0.5])
    assert state.mass_at(T0 + h_ms) == pytest.approx(0.75)
    # The same when the newer one arrives second: the sum is rescaled to the new T.
    other = DimensionState(dims()["short_term"])
    other.update(obs(T0 - h_ms, vec=e(1)))
    other.update(obs(T0, vec=e(0)))
    np.testing.assert_allclose(other.sum_vector(), m, rtol=1e-12)  # type: ignore[arg-type]
    assert other.mass == pytest.approx(1.5, rel=1e-12)


def test_get_is_unit_mean_direction() -> None:
    state = DimensionState(dims()["short_term"])
    state.update(obs(T0, "like", e(0)))
    state.update(obs(T0, "click", e(1)))
    got = state.get()
    assert got is not None
    np.testing.assert_allclose(got[:2], np.array([2.0, 1.0]) / math.sqrt(5))
    assert state.norm == pytest.approx(math.sqrt(5))
    vec = state.vector()
    assert vec is not None and vec.dtype == np.float32


# -- routing -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("type_", "expected"),
    [
        ("view", {"short_term"}),
        ("click", {"short_term"}),
        ("read", {"short_term", "long_term"}),
        ("like", {"short_term", "long_term"}),
        ("share", {"short_term", "long_term"}),
        ("purchase", {"short_term", "long_term"}),
        ("search", {"short_term", "search"}),
        ("dislike", {"negative"}),
        ("skip", {"negative"}),
    ],
)
def test_event_types_land_in_their_dimensions(type_: str, expected: set[str]) -> None:
    user = batch_compute([obs(T0, type_, tags=("t",))])
    touched = {n for n, d in user.dimensions.items() if not d.is_empty}
    assert touched == expected
    assert set(user.vectors()) == expected | ({"interest_0"} if WEIGHTS[type_] > 0 else set())


def test_negative_feedback_only_lands_in_negative_with_abs_weight() -> None:
    user = batch_compute([obs(T0, "dislike", e(2)), obs(T0, "skip", e(3))])
    neg = user.dimensions["negative"]
    assert neg.mass == pytest.approx(1.5) and neg.count == 2
    assert all(d.is_empty for n, d in user.dimensions.items() if n != "negative")
    assert all(s is None for s in user.clusters.slots)
    assert user.profile() == []


def test_zero_weight_and_positive_weight_on_negative_type() -> None:
    user = batch_compute([obs(T0, "click", weight=0.0), obs(T0, "dislike", weight=2.0)])
    # weight 0 feeds nothing; a positive-weight "dislike" is not negative feedback.
    assert user.dimensions["negative"].is_empty
    assert user.dimensions["short_term"].count == 1
    assert user.dimensions["long_term"].is_empty


def test_custom_negative_dimension_of_all_types() -> None:
    spec = DimensionSpec("anything_bad", 60.0, None, negative=True)
    state = DimensionState(spec)
    state.update(obs(T0, "click", weight=-3.0))
    state.update(obs(T0, "click", weight=3.0))
    assert state.mass == 3.0 and state.count == 1


# -- order independence ----------------------------------------------------------------------------
event_lists = st.lists(
    st.tuples(
        st.integers(0, 90 * 24 * 3600 * 1000),
        st.sampled_from(sorted(WEIGHTS)),
        st.lists(st.floats(0.0, 1.0), min_size=DIM, max_size=DIM).filter(lambda v: sum(v) > 0.1),
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=150, deadline=None)
@given(events=event_lists, data=st.data())
def test_dimension_means_are_order_independent(
    events: list[tuple[int, str, list[float]]], data: st.DataObject
) -> None:
    observations = [obs(T0 + dt, t, np.array(v)) for dt, t, v in events]
    shuffled = data.draw(st.permutations(observations))
    a, b = batch_compute(observations), batch_compute(shuffled)
    for name, da in a.dimensions.items():
        db = b.dimensions[name]
        assert (da.ref_ts_ms, da.count) == (db.ref_ts_ms, db.count)
        assert da.mass == pytest.approx(db.mass, rel=1e-9)
        ga, gb = da.get(), db.get()
        assert (ga is None) == (gb is None)
        if ga is not None and gb is not None:
            np.testing.assert_allclose(ga, gb, atol=1e-9)


# -- persistence -----------------------------------------------------------------------------------
def test_dimension_payload_round_trip() -> None:
    state = DimensionState(dims()["long_term"])
    state.update(obs(T0, "like", e(0)))
    state.update(obs(T0 + 5000, "read", e(1)))
    payload = json.loads(json.dumps(state.to_payload(), allow_nan=False))
    assert set(payload) == {"mass", "norm", "ref_ts_ms", "count"}
    assert payload["ref_ts_ms"] == T0 + 5000 and payload["count"] == 2
    back = DimensionState.from_stored(payload, state.vector(), spec=state.spec)
    assert back.mass == state.mass and back.count == 2 and back.ref_ts_ms == T0 + 5000
    np.testing.assert_allclose(back.sum_vector(), state.sum_vector(), rtol=1e-6, atol=1e-7)  # type: ignore[arg-type]


def test_from_stored_none_is_empty() -> None:
    state = DimensionState.from_stored(None, None, spec=dims()["search"])
    assert state.is_empty and state.get() is None and state.vector() is None


def test_zero_mass_gives_no_vector() -> None:
    payload = {"mass": 0.0, "norm": 0.0, "ref_ts_ms": None, "count": 0}
    state = DimensionState.from_stored(payload, None, spec=dims()["search"])
    assert state.vector() is None and state.mass == 0.0


def test_cancelling_events_give_no_vector_but_keep_state() -> None:
    state = DimensionState(dims()["short_term"])
    state.update(obs(T0, vec=e(0)))
    state.update(obs(T0, vec=-e(0)))
    assert state.vector() is None and state.mass == 2.0
    payload = state.to_payload()
    assert payload["norm"] == 0.0
    back = DimensionState.from_stored(payload, None, spec=state.spec)
    back.update(obs(T0, vec=e(1)))
    np.testing.assert_allclose(back.get(), e(1))  # type: ignore[arg-type]
    assert back.mass == 3.0


@pytest.mark.parametrize(
    ("payload", "vector"),
    [
        ({"mass": 1.0, "norm": 1.0, "ref_ts_ms": T0, "count": 1}, None),  # vector lost
        ({"mass": 1.0, "norm": 2.0, "ref_ts_ms": T0, "count": 1}, [1.0, 0.0]),  # norm > mass
        ({"mass": 1.0, "norm": 1.0, "ref_ts_ms": None, "count": 1}, [1.0, 0.0]),
        ({"mass": -1.0, "norm": 0.0, "ref_ts_ms": T0, "count": 1}, None),
        ({"mass": "1", "norm": 0.0, "ref_ts_ms": T0, "count": 1}, None),
        ({"mass": 1.0, "norm": 0.0, "ref_ts_ms": T0, "count": 1.5}, None),
        ({"mass": 1.0, "norm": 1.0, "ref_ts_ms": T0}, [1.0, 0.0]),
        ({"mass": 1.0, "norm": 1.0, "ref_ts_ms": T0, "count": 1}, [0.0, 0.0]),
    ],
)
def test_from_stored_rejects_inconsistent_state(payload: dict[str, object], vector: object) -> None:
    with pytest.raises(StateError):
        DimensionState.from_stored(payload, vector, spec=dims()["short_term"])


def test_dimension_mismatch_is_an_error() -> None:
    state = DimensionState(dims()["short_term"])
    state.update(obs(T0, vec=e(0, 4)))
    with pytest.raises(ValueError):
        state.update(obs(T0, vec=e(0, 5)))


# -- numerical robustness ------------------------------------------------------------------------
YEAR_MS = 365 * 24 * 3600 * 1000


def test_events_years_apart_stay_finite() -> None:
    events = [
        obs(T0, "like", e(0), tags=("old",)),
        obs(T0 + 10 * YEAR_MS, "like", e(1), tags=("new",)),
        obs(T0 - 30 * YEAR_MS, "like", e(2), tags=("ancient",)),  # out of order, decays to 0
        obs(T0 + 5 * YEAR_MS, "search", e(3)),
    ]
    with np.errstate(over="raise", invalid="raise", divide="raise"), warnings.catch_warnings():
        warnings.simplefilter("error")
        user = batch_compute(events)
        vectors, payload = user.to_stored()
        json.dumps(payload, allow_nan=False)
        profile = user.profile()
    for v in vectors.values():
        assert np.all(np.isfinite(v))
    np.testing.assert_allclose(vectors["short_term"], e(1), atol=1e-12)
    np.testing.assert_allclose(vectors["long_term"], e(1), atol=1e-6)
    st_state = user.dimensions["short_term"]
    assert st_state.mass == 2.0 and st_state.count == 4 and st_state.ref_ts_ms == T0 + 10 * YEAR_MS
    assert profile[0]["label"] == "new" and profile[0]["weight"] == 1.0
    assert all(0.0 <= p["weight"] <= 1.0 for p in profile)
    again = UserInterests.from_stored(vectors, json.loads(json.dumps(payload)))
    assert again.dimensions["short_term"].mass == 2.0


def test_huge_gap_mass_at_underflows_to_zero() -> None:
    state = DimensionState(dims()["short_term"])
    state.update(obs(T0))
    assert state.mass_at(T0 + 100 * YEAR_MS) == 0.0
    assert state.mass_at(T0 - 1000) == state.mass


def test_infinite_half_life_means_no_decay() -> None:
    state = DimensionState(DimensionSpec("forever", math.inf))
    state.update(obs(T0, vec=e(0)))
    state.update(obs(T0 + 50 * YEAR_MS, vec=e(1)))
    np.testing.assert_allclose(state.get()[:2], [math.sqrt(0.5)] * 2)  # type: ignore[index]
