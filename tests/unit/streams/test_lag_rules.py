"""Lag arithmetic and group status rules (streams.lag_rules): every rule, edge and ordering."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.lag_rules import (
    DEFAULT_WINDOW,
    GroupSample,
    PartitionSample,
    SampleWindow,
    Status,
    evaluate,
    group_totals,
    lag_seconds,
    partition_lag,
    sample_to_dict,
)

T0 = 1_700_000_000.0


def part(
    committed: int | None, log_end: int | None = 100, *, p: int = 0, secs: float | None = None
) -> PartitionSample:
    return PartitionSample("events", p, committed, log_end, secs)


def sample(*parts: PartitionSample, members: int = 1, at: float = T0) -> GroupSample:
    state = "Stable" if members else "Empty"
    return GroupSample("g", at, state, members, parts)


def window(*offsets: tuple[int, int], members: int = 1) -> list[GroupSample]:
    """Samples of one partition from (committed, log_end) pairs, 10 s apart."""
    return [
        sample(part(c, le), members=members, at=T0 + 10 * i) for i, (c, le) in enumerate(offsets)
    ]


# -- partition_lag -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("committed", "log_end", "lag"),
    [
        (4, 10, 6),
        (0, 5, 5),
        (7, 7, 0),
        (0, 0, 0),
        (9, 5, 0),  # beyond the log end: Kafka's tool prints -4, we clamp
        (None, 10, None),  # no commit: no number, never the log-end offset
        (-1, 10, None),  # OffsetFetch's "no offset"
        (4, None, None),  # partition unknown to the cluster
        (4, -1, None),
        (None, None, None),
    ],
)
def test_partition_lag(committed: int | None, log_end: int | None, lag: int | None) -> None:
    assert partition_lag(committed, log_end) == lag


@given(st.one_of(st.none(), st.integers(-5, 10**12)), st.one_of(st.none(), st.integers(-5, 10**12)))
def test_partition_lag_is_never_negative_and_none_only_without_offsets(
    committed: int | None, log_end: int | None
) -> None:
    lag = partition_lag(committed, log_end)
    valid = committed is not None and committed >= 0 and log_end is not None and log_end >= 0
    assert (lag is not None) == valid
    if lag is not None:
        assert committed is not None and log_end is not None
        assert lag == max(0, log_end - committed) >= 0


# -- lag_seconds -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lag", "ts_ms", "expected"),
    [
        (None, 1_000, None),  # no lag number: no age either
        (None, None, None),
        (0, None, 0.0),  # caught up: nothing is waiting, whatever the timestamp
        (0, 1_000, 0.0),
        (3, None, None),  # record not read in time
        (3, -1, None),  # record without a timestamp
        (3, int((T0 - 42.5) * 1000), 42.5),
        (3, int((T0 + 30) * 1000), 0.0),  # producer clock ahead: not a negative age
    ],
)
def test_lag_seconds(lag: int | None, ts_ms: int | None, expected: float | None) -> None:
    got = lag_seconds(lag, ts_ms, T0)
    assert got == (pytest.approx(expected) if expected is not None else None)


# -- group_totals ------------------------------------------------------------------------------


def test_totals_skip_partitions_without_a_number() -> None:
    totals = group_totals(
        [
            part(4, 10, p=0, secs=12.0),
            part(7, 7, p=1, secs=0.0),
            part(None, 5, p=2),
            part(2, 5, p=3),  # lagging, age unknown
        ]
    )
    assert (totals.lag_max, totals.lag_sum, totals.lag_seconds_max, totals.measured) == (
        6,
        9,
        12.0,
        3,
    )


def test_totals_of_nothing_measured_are_none() -> None:
    for parts in ([], [part(None, 5), part(None, None, p=1)]):
        totals = group_totals(parts)
        assert (totals.lag_max, totals.lag_sum, totals.lag_seconds_max, totals.measured) == (
            None,
            None,
            None,
            0,
        )


# -- evaluate: one sample ----------------------------------------------------------------------


def test_status_severity_order() -> None:
    order = [Status.UNKNOWN, Status.OK, Status.LAGGING, Status.STALLED, Status.STOPPED]
    assert [s.severity for s in order] == sorted(s.severity for s in Status)
    assert [str(s) for s in order] == ["unknown", "OK", "lagging", "stalled", "stopped"]


def test_empty_window_is_unknown() -> None:
    assert evaluate([]).status is Status.UNKNOWN


@pytest.mark.parametrize("members", [0, 2])
def test_no_committed_offsets_is_unknown(members: int) -> None:
    verdict = evaluate([sample(part(None, 50), part(None, 0, p=1), members=members)])
    assert verdict.status is Status.UNKNOWN
    assert "no committed offsets" in verdict.reason
    assert evaluate([sample(members=members)]).status is Status.UNKNOWN  # group without rows


@pytest.mark.parametrize("members", [0, 1])
def test_caught_up_is_ok_with_or_without_members(members: int) -> None:
    # An idle caught-up group with no members is fine (worker-down alerts cover the absence).
    verdict = evaluate([sample(part(10, 10), part(9, 5, p=1), part(None, 8, p=2), members=members)])
    assert verdict.status is Status.OK


def test_backlog_without_members_is_stopped_from_one_sample() -> None:
    verdict = evaluate([sample(part(4, 10), part(7, 7, p=1), members=0)])
    assert verdict.status is Status.STOPPED
    assert "lag 6 on 1 partition" in verdict.reason


def test_backlog_with_members_is_lagging_from_one_sample() -> None:
    verdict = evaluate([sample(part(4, 10), part(0, 3, p=1))])
    assert verdict.status is Status.LAGGING
    assert "lag 9 on 2 partitions" in verdict.reason and "one sample" in verdict.reason


def test_partitions_without_commit_do_not_count_as_backlog() -> None:
    assert evaluate([sample(part(5, 5), part(None, 1000, p=1), members=0)]).status is Status.OK


# -- evaluate: a window ------------------------------------------------------------------------


def test_stopped_beats_any_window() -> None:
    progress = window((0, 10), (5, 12), (9, 14), members=0)
    assert evaluate(progress).status is Status.STOPPED


def test_zero_lag_somewhere_in_the_window_is_ok() -> None:
    assert evaluate(window((10, 10), (10, 20), (10, 30))).status is Status.OK


def test_offset_not_moving_with_lag_is_stalled() -> None:
    verdict = evaluate(window((4, 10), (4, 10), (4, 12)))
    assert verdict.status is Status.STALLED
    assert "did not move" in verdict.reason


def test_offset_going_backwards_is_lagging_even_if_it_comes_back() -> None:
    for offsets in (((8, 20), (3, 20), (5, 20)), ((8, 20), (3, 20), (8, 20))):
        verdict = evaluate(window(*offsets))
        assert verdict.status is Status.LAGGING
        assert "backwards" in verdict.reason


@pytest.mark.parametrize(
    "offsets",
    [
        ((0, 10), (5, 20), (10, 30)),  # growing lag
        ((0, 10), (5, 15), (10, 20)),  # constant lag while offsets move (Burrow's WARN too)
    ],
)
def test_lag_never_shrinking_while_offsets_move_is_lagging(
    offsets: tuple[tuple[int, int], ...],
) -> None:
    verdict = evaluate(window(*offsets))
    assert verdict.status is Status.LAGGING
    assert "never shrinks" in verdict.reason


def test_lag_shrinking_at_some_step_is_ok() -> None:
    assert evaluate(window((0, 100), (50, 120), (60, 150))).status is Status.OK
    assert evaluate(window((0, 100), (60, 120))).status is Status.OK


def test_new_partition_in_a_window_is_lagging() -> None:
    samples = [
        sample(part(5, 5, p=0), part(None, 10, p=1), at=T0),
        sample(part(5, 5, p=0), part(2, 10, p=1), at=T0 + 10),
    ]
    verdict = evaluate(samples)
    assert verdict.status is Status.LAGGING
    assert "new partition" in verdict.reason


def test_worst_partition_sets_the_group_status() -> None:
    def two(a: tuple[int, int], b: tuple[int, int], at: float) -> GroupSample:
        return sample(part(*a, p=0), part(*b, p=1), at=at)

    stalled_and_ok = [two((0, 10), (4, 10), T0), two((10, 15), (4, 12), T0 + 10)]
    assert evaluate(stalled_and_ok).status is Status.STALLED
    lagging_and_stalled = [two((0, 10), (4, 10), T0), two((5, 20), (4, 10), T0 + 10)]
    verdict = evaluate(lagging_and_stalled)
    assert verdict.status is Status.STALLED
    assert "lag 21 on 2 partitions" in verdict.reason
    lagging_and_ok = [two((0, 10), (0, 10), T0), two((5, 20), (9, 10), T0 + 10)]
    assert evaluate(lagging_and_ok).status is Status.LAGGING


# -- SampleWindow ------------------------------------------------------------------------------


def test_window_keeps_the_last_samples_per_group() -> None:
    w = SampleWindow(2)
    assert SampleWindow().size == DEFAULT_WINDOW
    stuck = window((4, 10), (4, 10), (4, 10))
    assert w.add(stuck[0]).status is Status.LAGGING  # one sample: trend unknown
    assert w.add(stuck[1]).status is Status.STALLED
    moving = sample(part(9, 12), at=T0 + 30)
    assert w.add(moving).status is Status.OK  # window (4,10),(9,12): lag went down
    assert [s.taken_at for s in w.samples("g")] == [T0 + 10, T0 + 30]
    other = GroupSample("h", T0, "Empty", 0, (part(0, 3),))
    assert w.add(other).status is Status.STOPPED
    assert len(w.samples("g")) == 2 and len(w.samples("h")) == 1 and w.samples("x") == []


def test_window_needs_room_for_one_sample() -> None:
    with pytest.raises(ValueError, match="at least one"):
        SampleWindow(0)


# -- sample_to_dict ----------------------------------------------------------------------------


def test_json_shape_uses_null_where_the_tool_prints_a_dash() -> None:
    s = sample(part(4, 10, p=0, secs=12.34567), part(None, 3, p=1), members=0)
    doc = sample_to_dict(s, evaluate([s]))
    assert doc["status"] == "stopped" and doc["members"] == 0 and doc["state"] == "Empty"
    assert (doc["lag_max"], doc["lag_sum"], doc["lag_seconds_max"]) == (6, 6, 12.346)
    assert doc["partitions"] == [
        {
            "topic": "events",
            "partition": 0,
            "current_offset": 4,
            "log_end_offset": 10,
            "lag": 6,
            "lag_seconds": 12.346,
        },
        {
            "topic": "events",
            "partition": 1,
            "current_offset": None,
            "log_end_offset": 3,
            "lag": None,
            "lag_seconds": None,
        },
    ]


# -- properties over random windows ------------------------------------------------------------

offsets_st = st.tuples(st.one_of(st.none(), st.integers(0, 50)), st.integers(0, 60))


@st.composite
def windows(draw: st.DrawFn) -> list[GroupSample]:
    n_parts = draw(st.integers(0, 3))
    size = draw(st.integers(1, 5))
    return [
        GroupSample(
            "g",
            T0 + i,
            "Stable",
            draw(st.integers(0, 2)),
            tuple(part(*draw(offsets_st), p=p) for p in range(n_parts)),
        )
        for i in range(size)
    ]


@given(windows())
def test_status_properties(samples: list[GroupSample]) -> None:
    verdict = evaluate(samples)
    latest = samples[-1]
    totals = latest.totals
    if totals.measured == 0:
        assert verdict.status is Status.UNKNOWN
    elif totals.lag_sum == 0:
        assert verdict.status is Status.OK
    elif latest.members == 0:
        assert verdict.status is Status.STOPPED
    elif len(samples) == 1:
        assert verdict.status is Status.LAGGING
    else:
        assert verdict.status in {Status.OK, Status.LAGGING, Status.STALLED}
    # Only the latest sample decides whether there is anything to judge at all.
    assert (verdict.status is Status.UNKNOWN) == (totals.measured == 0)
