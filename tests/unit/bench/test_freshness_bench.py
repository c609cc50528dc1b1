"""The freshness benchmark's arithmetic: what it reports must follow from the timings it saw.

The run itself needs a broker, both workers and the model (``python -m bench.freshness_bench``);
these tests cover the parts that turn timings into numbers, and reading the embed worker's real
metrics registry.
"""

from __future__ import annotations

import doctest
import math
import random
from pathlib import Path

import pytest

from bench import freshness as fr
from bench.freshness_bench import read_new
from streams.embed.metrics import FRESHNESS_BUCKETS, EmbedMetrics


def timing(eid: str, ts: float, emitted: float, polled: float, done: float) -> fr.EventTiming:
    return fr.EventTiming(eid, ts, ts + 1, emitted, polled, done, batch_jobs=10)


def test_percentiles_are_nearest_rank_and_ignore_input_order() -> None:
    values = list(range(1, 1001))
    random.Random(3).shuffle(values)
    s = fr.summarize(values)
    assert (s["p50"], s["p90"], s["p99"], s["max"], s["count"]) == (500, 900, 990, 1000, 1000)
    assert s["mean"] == pytest.approx(500.5)
    assert math.isnan(fr.summarize([])["p99"])


def test_histogram_counts_every_value_once_with_inclusive_upper_edges() -> None:
    values = [0.0, 50.0, 50.1, 1499.9, 1500.0, 1500.1, 2_000_000.0]
    hist = fr.histogram(values)
    counts, le = hist["counts"], hist["le"]
    assert len(counts) == len(le) + 1 and sum(counts) == len(values)
    assert counts[le.index(50.0)] == 2  # 0 and 50: (.., 50]
    assert counts[le.index(1500.0)] == 2  # 1499.9 and 1500
    assert counts[le.index(1550.0)] == 1  # 1500.1
    assert counts[-1] == 1  # above the last edge (2 min)


def test_histogram_percentile_bounds_the_exact_one_from_above() -> None:
    rng = random.Random(7)
    values = [rng.lognormvariate(6.5, 0.6) for _ in range(5000)]
    hist = fr.histogram(values)
    for q in (50, 90, 99):
        exact = fr.percentile(values, q)
        bound = fr.histogram_percentile(hist["le"], hist["counts"], q)
        assert exact <= bound, q
        # within one bucket: the previous edge lies below the exact value
        assert hist["le"][hist["le"].index(bound) - 1] < exact, q


def test_stage_split_adds_up_and_names_the_slow_side() -> None:
    # Stream side ~1 s everywhere; the slowest event is slow on the embed side.
    timings = [timing(f"e{i}", 0, 1000, 1050, 1200) for i in range(99)]
    timings.append(timing("slow", 0, 1000, 4900, 5000))
    for t in timings:
        assert t.stream + t.embed == t.total and t.queue + t.fold == t.embed
    split = fr.stage_split(timings)
    share = split["share_of_mean"]
    assert share["stream"] + share["embed"] == pytest.approx(1.0)
    assert share["stream"] > share["embed"]  # most events: 1000 of 1200 ms in the stream worker
    tail = split["share_of_mean_slowest_1pct"]
    assert tail["embed"] == pytest.approx(0.8)  # the slowest event: 4000 of 5000 ms embed side
    assert split["queue"]["max"] == 3900


def test_over_time_shows_a_growing_backlog() -> None:
    # Sent at 10/s for 20 s; each later event waits 100 ms more: a pipeline falling behind.
    timings = [timing(f"e{i}", i * 100, i * 100, i * 100, i * 100 + 100 * i) for i in range(200)]
    windows = fr.over_time(timings, start_ms=0, width_s=5)
    assert [w["events"] for w in windows] == [50, 50, 50, 50]
    p50s = [w["p50"] for w in windows]
    assert p50s == sorted(p50s) and p50s[-1] > 5 * p50s[0]


def test_lines_round_trip_and_a_torn_tail_waits_for_its_end(tmp_path: Path) -> None:
    path = tmp_path / "obs.tsv"
    a = timing("a", 1000, 1900, 1950.5, 2100.5)
    b = timing("b", 1001, 1901, 1950.5, 2100.5)
    path.write_text(a.to_line() + b.to_line()[:9])  # b is half written
    got, offset = read_new(path, 0)
    assert got == [a]
    with path.open("a") as fh:
        fh.write(b.to_line()[9:])
    got, offset2 = read_new(path, offset)
    assert got == [b] and offset2 == path.stat().st_size
    assert read_new(tmp_path / "missing.tsv", 0) == ([], 0)


def test_an_event_counts_once_at_its_first_write() -> None:
    first = timing("e1", 0, 900, 950, 1000)
    replay = timing("e1", 0, 900, 5000, 5100)  # the job read again after a rebalance
    other = timing("warm", 0, 1, 2, 3)
    seen = fr.first_by_id([replay, other, first], wanted={"e1", "e2"})
    assert seen == {"e1": first}


def test_achieved_rate_and_the_user_mix() -> None:
    assert fr.achieved_rate([i * 0.5 for i in range(2001)]) == pytest.approx(2000)
    assert math.isnan(fr.achieved_rate([5.0]))
    users = [fr.user_for(i, 1000) for i in range(10_000)]
    heavy = [u for u in users if u.startswith("heavy-")]
    assert len(heavy) == 1000 and len(set(heavy)) == 5
    others = [u for u in users if not u.startswith("heavy-")]
    assert len(set(others)) == 1000  # every user gets events, 9 each
    assert max(others.count(u) for u in set(others[:50])) == 9


def test_delivered_rate_tells_a_backlog_from_keeping_up() -> None:
    # 1,000 events sent at 100/s; each takes ~300 ms when the pipeline keeps up ...
    sent = [i * 10.0 for i in range(1000)]
    kept_up = [ts + 300 + (i % 7) * 20 for i, ts in enumerate(sent)]
    assert fr.steady_rate(kept_up) == pytest.approx(100, rel=0.02)
    # ... and the writes come at 60/s whatever the send rate when it cannot.
    behind = [300 + i * 1000 / 60 for i in range(1000)]
    assert fr.steady_rate(behind) == pytest.approx(60, rel=0.01)
    assert math.isnan(fr.steady_rate([1.0, 2.0]))


def test_the_embed_workers_freshness_histogram_between_two_scrapes() -> None:
    metrics = EmbedMetrics()
    metrics.freshness.observe(0.3)  # before the run: must not count
    before = fr.prometheus_samples(metrics.render().decode())
    for seconds in (0.2, 0.7, 0.8, 1.5, 4000.0):
        metrics.freshness.observe(seconds)
    after = fr.prometheus_samples(metrics.render().decode())
    hist = fr.prometheus_histogram(before, after, "interest_update_freshness_seconds")
    assert hist["le"] == [float(b) for b in FRESHNESS_BUCKETS]
    assert hist["count"] == 5 and sum(hist["counts"]) == 5
    assert hist["sum"] == pytest.approx(4003.2)
    by_edge = dict(zip([*hist["le"], math.inf], hist["counts"], strict=True))
    assert by_edge[0.25] == 1 and by_edge[1.0] == 2 and by_edge[2.0] == 1 and by_edge[math.inf] == 1
    assert fr.histogram_percentile(hist["le"], hist["counts"], 50) == 1.0


def test_the_docstring_examples_hold() -> None:
    # bench/ is outside pytest's --doctest-modules paths; its examples are checked here.
    result = doctest.testmod(fr)
    assert result.attempted > 5 and result.failed == 0
