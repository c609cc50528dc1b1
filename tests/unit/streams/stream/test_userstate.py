"""Per-user state: numbering, dedupe, replay skipping, folding, activity windows, storage."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts.events import Event
from streams.contracts.jobs import UpdateJob
from streams.stream.userstate import (
    ActivityWindow,
    Applied,
    StateError,
    StateLimits,
    UserState,
    event_hash,
    has_pending,
)

TYPES = ("view", "click", "like", "skip")
MIN = 60_000


def event(eid: str, ts: int = 10 * MIN, type_: str = "click", text: str | None = "t") -> Event:
    return Event(eid, "u1", type_, ts, 1.0, item_id=None if text else "i1", text=text)


def apply_all(
    s: UserState, events: list[Event], limits: StateLimits, start_offset: int = 0
) -> list[Applied]:
    return [
        s.apply(e, seen_ms=1_000 + i, source=0, offset=start_offset + i, limits=limits).outcome
        for i, e in enumerate(events)
    ]


@settings(max_examples=300)
@given(st.lists(st.integers(0, 40), max_size=200), st.integers(0, 16))
def test_dedupe_matches_a_window_of_recent_accepted_ids(ids: list[int], window: int) -> None:
    """An id is a duplicate exactly when it is among the last ``window`` accepted ids."""
    limits = StateLimits(dedupe_window=window, pending_cap=1_000)
    s = UserState()
    recent: list[str] = []
    for i, n in enumerate(ids):
        eid = f"e{n}"
        got = s.apply(event(eid), seen_ms=1, source=0, offset=i, limits=limits).outcome
        expected = Applied.DUPLICATE if window and eid in recent[-window:] else None
        if expected is Applied.DUPLICATE:
            assert got is Applied.DUPLICATE
        else:
            assert got is Applied.NEW
            recent.append(eid)
    assert s.last_n == len(recent)
    assert [e.event_id for e in s.pending] == recent
    assert [e.n for e in s.pending] == list(range(1, len(recent) + 1))


@given(st.lists(st.integers(0, 30), max_size=120), st.integers(0, 119))
def test_replayed_offsets_are_skipped_exactly(ids: list[int], crash_at: int) -> None:
    """Re-reading records from any earlier offset changes nothing: same numbers, same state."""
    limits = StateLimits(pending_cap=1_000)
    events = [event(f"e{n}") for n in ids]
    s = UserState()
    apply_all(s, events, limits)
    before = s.to_bytes()
    replay = events[min(crash_at, len(events)) :]
    outcomes = apply_all(s, replay, limits, start_offset=min(crash_at, len(events)))
    assert all(o is Applied.REPLAY for o in outcomes)
    assert s.to_bytes() == before


def test_sources_have_their_own_offsets() -> None:
    limits = StateLimits()
    s = UserState()
    assert s.apply(event("a"), seen_ms=1, source=0, offset=5, limits=limits).outcome == "new"
    assert s.apply(event("b"), seen_ms=1, source=1, offset=0, limits=limits).outcome == "new"
    assert s.apply(event("c"), seen_ms=1, source=1, offset=0, limits=limits).outcome == "replay"
    assert s.offsets == [5, 0]


def test_event_hash_is_8_bytes_and_stable() -> None:
    assert event_hash("e1") == event_hash("e1") != event_hash("e2")
    assert len(event_hash("x" * 500)) == 8


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.sampled_from(TYPES), st.integers(0, 3_000)), min_size=1, max_size=150),
    st.integers(1, 40),
    st.integers(1_024, 40_000),
)
def test_folding_never_loses_a_count(spec: list[tuple[str, int]], cap: int, max_bytes: int) -> None:
    """pending + folded == accepted; pending is the newest suffix within both bounds."""
    limits = StateLimits(pending_cap=cap, pending_max_bytes=max_bytes)
    events = [event(f"e{i}", type_=t, text="x" * size) for i, (t, size) in enumerate(spec)]
    s = UserState()
    folded = sum(
        s.apply(e, seen_ms=1, source=0, offset=i, limits=limits).folded
        for i, e in enumerate(events)
    )
    assert folded == s.folded_events
    assert len(s.pending) + s.folded_events == len(events)
    assert sum(s.folded.values()) == s.folded_events
    assert [e.event_id for e in s.pending] == [e.event_id for e in events[s.folded_events :]]
    assert 1 <= len(s.pending) <= cap
    assert len(s.pending) == 1 or s.pending_bytes <= max_bytes
    dropped = events[: s.folded_events]
    for t in TYPES:
        assert s.folded.get(t, 0) == sum(1 for e in dropped if e.type == t)
    job = s.build_job("u1", now_ms=5, limits=limits)
    assert len(job.to_json()) < max_bytes + 2_000 or len(job.events) == 1
    if s.folded_events:
        assert job.folded == s.folded


@settings(max_examples=200)
@given(
    st.lists(st.tuples(st.sampled_from(TYPES), st.integers(0, 40 * MIN)), max_size=80),
    st.sampled_from([(MIN, MIN), (10 * MIN, MIN), (10 * MIN, 5 * MIN), (30 * MIN, 30 * MIN)]),
)
def test_activity_counts_match_a_recount(
    spec: list[tuple[str, int]], window: tuple[int, int]
) -> None:
    """Counts == the events whose hop bucket lies in the window ending at the newest bucket,
    except late events whose bucket had already left the window when they arrived."""
    size, hop = window
    limits = StateLimits(windows=(ActivityWindow(size, hop),), pending_cap=1_000)
    s = UserState()
    counted: list[tuple[str, int]] = []
    newest = -1
    for i, (t, ts) in enumerate(spec):
        s.apply(event(f"e{i}", ts=ts, type_=t), seen_ms=1, source=0, offset=i, limits=limits)
        newest = max(newest, ts)
        lo = newest - newest % hop - size + hop
        if ts - ts % hop >= lo:
            counted.append((t, ts))
    expected: dict[str, int] = {}
    if spec:
        lo = newest - newest % hop - size + hop
        for t, ts in counted:
            if ts - ts % hop >= lo:
                expected[t] = expected.get(t, 0) + 1
    got = s.activity_counts(limits)
    assert got.get(str(size), {}) == expected


@given(
    st.lists(st.sampled_from(TYPES), max_size=40),
    st.integers(0, 60),
    st.integers(0, 8),
)
def test_storage_round_trip(types: list[str], through: int, window: int) -> None:
    limits = StateLimits(pending_cap=16, dedupe_window=window)
    s = UserState()
    for i, t in enumerate(types):
        e = Event(f"é{i % 25}", "u", t, i * 7_000, 0.5, item_id=f"i{i}", text=None, tags=("a", "b"))
        s.apply(e, seen_ms=100 + i, source=i % 2, offset=i, limits=limits)
    s.mark_flushed(through, now_ms=999)
    raw = s.to_bytes()
    back = UserState.from_bytes(raw)
    assert back.to_bytes() == raw
    assert has_pending(raw) == bool(s.pending)
    for name in UserState.__slots__:
        assert getattr(back, name) == getattr(s, name), name
    json.loads(raw)  # plain JSON


def test_build_job_and_mark_flushed() -> None:
    limits = StateLimits(pending_cap=3)
    s = UserState()
    apply_all(s, [event(f"e{i}", type_="like" if i < 2 else "view") for i in range(5)], limits)
    job = s.build_job("u1", now_ms=2_000, limits=limits)
    assert job.seq == 5 and [e.n for e in job.events] == [3, 4, 5]
    assert job.folded == {"like": 2}
    assert job.first_seen_ms == 1_000 and job.emitted_ms == 2_000
    assert UpdateJob.from_json(job.to_json()) == job
    assert s.mark_flushed(4, now_ms=2_100) == 2
    assert [e.n for e in s.pending] == [5] and s.folded_events == 0
    assert s.last_flush_ms == 2_100 and s.first_seen_ms == 1_000
    assert s.mark_flushed(5, now_ms=2_200) == 1
    assert not s.pending and s.first_seen_ms == 0 and not has_pending(s.to_bytes())
    # Numbers continue after a flush; they are never reused.
    s.apply(event("new"), seen_ms=3_000, source=0, offset=99, limits=limits)
    assert s.pending[0].n == 6 and s.first_seen_ms == 3_000


def test_empty_state_has_no_pending() -> None:
    raw = UserState().to_bytes()
    assert not has_pending(raw)
    assert raw.startswith(b'{"f":0,')


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"f":0}', b'{"f":0,"n":"x","o":[],"t":[0,0]}'])
def test_garbage_state_is_a_state_error(raw: bytes) -> None:
    with pytest.raises(StateError):
        UserState.from_bytes(raw)


@pytest.mark.parametrize(
    "kwargs", [{"pending_cap": 0}, {"pending_max_bytes": 0}, {"dedupe_window": -1}]
)
def test_invalid_limits(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        StateLimits(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("size,hop", [(0, 0), (10, 20), (10, 3)])
def test_invalid_windows(size: int, hop: int) -> None:
    with pytest.raises(ValueError):
        ActivityWindow(size, hop)
