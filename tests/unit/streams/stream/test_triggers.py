"""The trigger policy: exhaustive properties of decide/next_check and the latency/rate promises."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.stream.triggers import FlushLead, FlushReason, PendingView, TriggerPolicy

T0 = 1_700_000_000_000


@st.composite
def policies(draw: st.DrawFn) -> TriggerPolicy:
    max_delay = draw(st.integers(0, 5_000))
    return TriggerPolicy(
        flush_count=draw(st.integers(1, 200)),
        max_delay_ms=max_delay,
        min_interval_ms=draw(st.integers(0, 2_000)),
        window_ms=draw(st.one_of(st.none(), st.integers(1, 120_000))),
        slack_ms=draw(st.integers(0, max_delay)),
    )


@st.composite
def views(draw: st.DrawFn) -> PendingView:
    first_seen = draw(st.integers(T0 - 10_000, T0 + 10_000))
    min_ts = draw(st.integers(0, 2 * T0))
    return PendingView(
        count=draw(st.integers(0, 1_000)),
        first_seen_ms=first_seen,
        last_flush_ms=draw(st.one_of(st.just(0), st.integers(T0 - 20_000, first_seen))),
        min_ts_ms=min_ts,
        max_ts_ms=draw(st.integers(min_ts, 2 * T0 + 1)),
    )


leads = st.one_of(st.just(0), st.integers(-100, 6_000))


@given(policies(), views(), st.integers(T0 - 30_000, T0 + 30_000), leads)
def test_decide_fires_exactly_from_next_check(
    policy: TriggerPolicy, view: PendingView, now: int, lead: int
) -> None:
    due = policy.next_check_ms(view, lead)
    reason = policy.decide(view, now, lead)
    if view.count == 0:
        assert due is None and reason is None
    else:
        assert due is not None
        assert (reason is not None) == (now >= due)


@given(policies(), views(), leads)
def test_age_bound_always_flushes(policy: TriggerPolicy, view: PendingView, lead: int) -> None:
    """Whatever else holds, a user is due once its oldest pending event is age_ms old -- or
    earlier by the lead, but never by more than half of age_ms."""
    if view.count:
        assert policy.decide(view, view.first_seen_ms + policy.age_ms, lead) is not None
        effective = min(max(lead, 0), policy.max_lead_ms)
        assert policy.decide(view, view.first_seen_ms + policy.age_ms - effective, lead)
        early = view.first_seen_ms + policy.age_ms - effective - 1
        if policy.decide(view, early, lead) is FlushReason.AGE:
            raise AssertionError("age fired before age_ms - lead")


@given(policies(), views(), st.integers(0, 60_000))
def test_decide_is_monotonic_in_time(policy: TriggerPolicy, view: PendingView, dt: int) -> None:
    now = view.first_seen_ms
    if policy.decide(view, now) is not None:
        assert policy.decide(view, now + dt) is not None


@given(policies(), views(), st.integers(T0 - 30_000, T0 + 30_000))
def test_count_and_window_respect_the_gate(
    policy: TriggerPolicy, view: PendingView, now: int
) -> None:
    reason = policy.decide(view, now)
    if reason in (FlushReason.COUNT, FlushReason.WINDOW):
        assert now - view.last_flush_ms >= policy.min_interval_ms
    if reason is FlushReason.COUNT:
        assert view.count >= policy.flush_count
    if reason is FlushReason.WINDOW:
        assert policy.window_ms is not None
        assert view.max_ts_ms // policy.window_ms > view.min_ts_ms // policy.window_ms


def _simulate(policy: TriggerPolicy, arrivals: list[int], tick: int) -> tuple[list[int], list[int]]:
    """A user whose events arrive at ``arrivals`` (ms, sorted) and a worker that checks the policy
    on every event and every ``tick`` ms. Returns flush times and each event's wait."""
    pending: list[int] = []
    last_flush = 0
    flushes: list[int] = []
    waits: list[int] = []
    times = sorted(set(arrivals) | set(range(arrivals[0], arrivals[-1] + 2 * policy.age_ms, tick)))
    it = iter(arrivals)
    nxt = next(it, None)
    for now in times:
        while nxt is not None and nxt <= now:
            pending.append(nxt)
            nxt = next(it, None)
        view = PendingView(len(pending), pending[0] if pending else 0, last_flush, 0, 0)
        if policy.decide(view, now) is not None:
            flushes.append(now)
            waits.extend(now - t for t in pending)
            pending.clear()
            last_flush = now
    assert not pending
    return flushes, waits


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(0, 5_000), min_size=1, max_size=300),
    st.integers(1, 100),
    st.integers(50, 400),
    st.integers(10, 50),
)
def test_latency_and_rate_promises(
    offsets: list[int], flush_count: int, min_interval: int, tick: int
) -> None:
    policy = TriggerPolicy(
        flush_count=flush_count, max_delay_ms=1000, min_interval_ms=min_interval, slack_ms=tick
    )
    arrivals = sorted(T0 + o for o in offsets)
    flushes, waits = _simulate(policy, arrivals, tick)
    # Latency: no event waits longer than max_delay (age + one tick of the checker).
    assert max(waits) <= policy.max_delay_ms
    # Rate: consecutive flushes are at least min(min_interval, age) apart.
    gaps = [b - a for a, b in itertools.pairwise(flushes)]
    assert all(g >= min(min_interval, policy.age_ms) for g in gaps)


def test_defaults_heavy_user_gets_a_few_jobs_a_second() -> None:
    """The issue's promise: <= max_delay latency, a 100 events/s user -> a few jobs per second."""
    policy = TriggerPolicy()
    arrivals = [T0 + i * 10 for i in range(1_000)]  # 100 events/s for 10 s
    flushes, waits = _simulate(policy, arrivals, tick=50)
    assert max(waits) <= policy.max_delay_ms
    assert len(flushes) / 10 <= 2  # about 1.6 jobs/s at flush_count 64
    flood = [T0 + i for i in range(10_000)]  # 1000 events/s: the gate caps jobs at 4/s
    flushes, _ = _simulate(policy, flood, tick=50)
    assert len(flushes) / 10 <= 4.1


def test_idle_user_flushes_on_age_only() -> None:
    policy = TriggerPolicy(max_delay_ms=1000, slack_ms=100)
    view = PendingView(1, T0, 0, 5, 5)
    assert policy.decide(view, T0 + 899) is None
    assert policy.decide(view, T0 + 900) is FlushReason.AGE
    assert policy.next_check_ms(view) == T0 + 900


def test_window_close_flushes_after_gate() -> None:
    policy = TriggerPolicy(window_ms=60_000, min_interval_ms=250)
    closed = PendingView(2, T0, T0 - 100, min_ts_ms=59_000, max_ts_ms=60_001)
    assert policy.window_closed(closed)
    assert policy.decide(closed, T0) is None
    assert policy.decide(closed, T0 + 150) is FlushReason.WINDOW
    assert policy.next_check_ms(closed) == T0 + 150
    same = PendingView(2, T0, 0, min_ts_ms=60_000, max_ts_ms=119_999)
    assert not policy.window_closed(same)
    assert not TriggerPolicy(window_ms=None).window_closed(closed)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"flush_count": 0},
        {"max_delay_ms": -1, "slack_ms": 0},
        {"slack_ms": 2000},
        {"slack_ms": -1},
        {"min_interval_ms": -1},
        {"window_ms": 0},
    ],
)
def test_invalid_policies_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        TriggerPolicy(**kwargs)  # type: ignore[arg-type]


def test_flush_lead_keeps_a_late_worker_within_max_delay() -> None:
    """A worker whose age flushes land ``late`` ms after their planned moment: with the learned
    lead its jobs fit within max_delay again (latency = age_ms - lead + late), up to the cap."""
    policy = TriggerPolicy(max_delay_ms=1000, slack_ms=100)
    for late in (0, 50, 100, 250, 400, 550):
        lead = FlushLead(policy)
        latencies = []
        for _ in range(20):
            used = lead.get()
            latencies.append(policy.age_ms - used + late)
            lead.update(late)
        assert max(latencies[1:]) <= policy.max_delay_ms, late
        assert lead.get() == max(0, late - policy.slack_ms)
    lead = FlushLead(policy)
    lead.update(5_000)  # a stall (GC, rebalance, backlog): capped, so age flushes stay apart
    assert lead.get() == policy.max_lead_ms == 450
    for _ in range(1_000):  # about a minute of timer flushes at 20 ticks/s
        lead.update(0)
    assert lead.get() == 0  # and forgotten once deliveries are prompt again
    with pytest.raises(ValueError, match="decay"):
        FlushLead(policy, decay=1.0)
