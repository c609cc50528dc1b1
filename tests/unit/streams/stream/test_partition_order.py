"""PartitionOrder: a consumer that follows its verdicts hands on every record of a partition in
order, whatever faust's rebalances do to its fetches (streams.stream.faust_ordering, repair 2)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.stream.partition_order import PartitionOrder, StallWatch, Verdict


def test_in_order_records_pass_and_a_jump_is_read_again() -> None:
    order = PartitionOrder()
    order.seek("p", 218)
    assert order.check("p", 218) == (Verdict.PASS, None)
    # A fetch from before the last seek: 715 is not next -- read again from 219.
    assert order.check("p", 715) == (Verdict.REFETCH, 219)
    assert order.refetches == 1
    order.seek("p", 219)  # the caller drops the rest of that fetch and seeks
    assert order.check("p", 219) == (Verdict.PASS, None)
    assert order.expected("p") == 220


def test_a_jump_that_survives_a_re_read_is_a_real_gap() -> None:
    order = PartitionOrder()
    order.seek("p", 10)
    assert order.check("p", 12) == (Verdict.REFETCH, 10)
    order.seek("p", 10)
    assert order.check("p", 12) == (Verdict.GAP, None)  # 10 and 11 hold no records
    assert order.check("p", 13) == (Verdict.PASS, None)
    assert order.check("p", 20) == (Verdict.REFETCH, 14)  # a later jump is checked again
    assert (order.refetches, order.gaps) == (2, 1)


def test_re_read_records_pass_without_moving_the_expected_offset() -> None:
    order = PartitionOrder()
    order.seek("p", 5)
    for offset in (5, 6, 7):
        order.check("p", offset)
    assert order.check("p", 3) == (Verdict.PASS, None)
    assert order.expected("p") == 8


def test_unknown_positions_accept_the_first_record() -> None:
    order = PartitionOrder()
    assert order.check("p", 42) == (Verdict.PASS, None)  # never sought: nothing to compare
    order.seek("p", None)  # e.g. no committed offset: the reset policy decides
    assert order.check("p", 7) == (Verdict.PASS, None)
    order.forget(["p"])
    assert order.expected("p") is None
    assert order.check("q", 3) == (Verdict.PASS, None)  # partitions are independent


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[int], list[tuple[str, int]]]:
    size = draw(st.integers(1, 60))
    present = [o for o in range(size) if draw(st.booleans()) or o % 3]  # some offsets hold none
    if not present:
        present = [0]
    actions = draw(
        st.lists(
            st.tuples(st.sampled_from(["fetch", "lose", "stale", "rebalance"]), st.integers(1, 8)),
            max_size=80,
        )
    )
    return present, actions


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_following_the_verdicts_never_skips_a_record(
    scenario: tuple[list[int], list[tuple[str, int]]],
) -> None:
    """A simulated consumer on one partition: fetches advance its position; faust's failures are
    a fetch whose first records are lost on the way (a cleared queue), a fetch from an earlier
    position handed over late (straddling a seek), and a rebalance (seek to the committed
    offset). The processor skips records at or below the last one it applied (the restart
    protocol). Whatever happens, what it applied is always the log's prefix (nothing skipped,
    so committing after it loses nothing), and in the end it has applied every record."""
    log, actions = scenario
    order = PartitionOrder()
    position = 0
    history: list[list[int]] = []
    applied: list[int] = []
    refetched = False  # the fetch right after our own seek is a plain one

    def fetch(n: int) -> list[int]:
        nonlocal position
        batch = [o for o in log if o >= position][:n]
        if batch:
            position = batch[-1] + 1
        history.append(batch)
        return batch

    def deliver(batch: list[int]) -> None:
        nonlocal position, refetched
        for offset in batch:
            verdict, seek_to = order.check("p", offset)
            if verdict is Verdict.REFETCH:
                assert seek_to is not None
                position = seek_to
                order.seek("p", seek_to)
                refetched = True
                return  # the rest of this fetch is dropped
            if not applied or offset > applied[-1]:
                applied.append(offset)

    def rebalance() -> None:
        nonlocal position
        position = applied[-1] + 1 if applied else 0  # the committed offset
        order.seek("p", position)

    order.seek("p", 0)
    for action, n in [*actions, *[("fetch", 8)] * (len(log) + 10)]:
        assert applied == log[: len(applied)], "a record was skipped"
        if refetched:
            action, refetched = "fetch", False
        if action == "fetch":
            deliver(fetch(n))
        elif action == "lose":
            deliver(fetch(n)[1:])
        elif action == "stale" and history:
            deliver(history[n % len(history)])
        elif action == "rebalance":
            rebalance()
    # A record lost at the very end shows no jump until another one comes; it is not committed
    # either, so the next rebalance or restart reads it again.
    rebalance()
    for _ in range(3):  # a re-read, maybe a refetch, and its re-read
        deliver(fetch(len(log)))
    assert applied == log


def test_a_waiting_partition_that_hands_nothing_on_is_named_once_per_period() -> None:
    watch = StallWatch(after_s=20)
    assert watch.stalled({"p0", "p1"}, now=0) == []
    for t in range(1, 20):
        watch.progress("p0", now=t)
        assert watch.stalled({"p0", "p1"}, now=t) == []
    assert watch.stalled({"p0", "p1"}, now=20) == ["p1"]
    for t in range(21, 39):
        assert watch.stalled({"p0", "p1"}, now=t) == []
    assert watch.stalled({"p0", "p1"}, now=39) == ["p0"]  # its last record at 19
    assert watch.stalled({"p0", "p1"}, now=40) == ["p1"]  # 20 s after it was named
    assert watch.stalls == 3


def test_time_not_waiting_does_not_count_towards_a_stall() -> None:
    """An idle partition (nothing past its position) or one faust holds on purpose (recovery,
    a rebalance) is not waiting: its clock starts when it starts waiting."""
    watch = StallWatch(after_s=20)
    watch.progress("p", now=0)
    for t in range(0, 3600, 5):
        assert watch.stalled(set(), now=t) == []
    assert watch.stalled({"p"}, now=3600) == []  # one record arrives after an idle hour
    for t in range(3601, 3620):
        assert watch.stalled({"p"}, now=t) == []
    assert watch.stalled({"p"}, now=3620) == ["p"]


def test_a_forgotten_partition_starts_afresh() -> None:
    watch = StallWatch(after_s=20)
    watch.stalled({"p"}, now=0)
    watch.forget(["p"])  # revoked at 0, assigned again at 30
    for t in range(30, 50):
        assert watch.stalled({"p"}, now=t) == []
    assert watch.stalled({"p"}, now=50) == ["p"]


def test_checks_far_apart_do_not_add_up_to_a_stall() -> None:
    """A rebalance stops the consumer's fetch loop (and so the checks): a busy partition seen
    waiting before it and again after it has not been stalled in between."""
    watch = StallWatch(after_s=20, gap_s=5)
    for t in range(0, 10):
        watch.progress("p", now=t)
        assert watch.stalled({"p"}, now=t) == []
    assert watch.stalled({"p"}, now=35) == []  # the first check after a 26 s rebalance
    for t in range(36, 55):
        assert watch.stalled({"p"}, now=t) == []
    assert watch.stalled({"p"}, now=55) == ["p"]  # seen waiting by every check since 35
