"""The pure part of the freshness benchmark (:mod:`bench.freshness_bench`): no I/O, no clock.

Per event the benchmark knows five wall-clock times (epoch ms, one machine, one clock):

* ``ts``: the producer's clock when it handed the event to Kafka (the event's own ``ts`` field);
* ``first_seen``: the job's ``first_seen_ms`` (the stream worker's clock start for the job's oldest
  event: its Kafka timestamp, clamped to [last flush, arrival]);
* ``emitted``: the job's ``emitted_ms`` (the stream worker produced the job);
* ``polled``: the embed worker's poll returned the batch holding the job;
* ``done``: the embed worker's store upsert of that batch returned (the vector is readable).

This module turns lists of those into what the benchmark reports: exact percentiles, a histogram
with fixed bucket edges, the split between the stream side and the embed side, latency over time,
and the achieved send rate. It also reads a Prometheus text exposition into numbers, for the embed
worker's own ``interest_update_freshness_seconds`` histogram.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

#: Histogram upper bounds (ms, inclusive, like Prometheus ``le``): 50 ms steps to 3 s (the
#: region the 1.5 s target lives in), coarser to 2 min; one more bucket counts what lies above.
EDGES_MS: tuple[float, ...] = (
    *(float(ms) for ms in range(50, 3001, 50)),
    *(3500.0, 4000.0, 5000.0, 6000.0, 8000.0, 10_000.0, 15_000.0, 20_000.0, 30_000.0),
    *(60_000.0, 120_000.0),
)


@dataclass(frozen=True, slots=True)
class EventTiming:
    """One event's way through the pipeline, as the embed worker recorded it (epoch ms)."""

    event_id: str
    ts: float
    first_seen: float
    emitted: float
    polled: float
    done: float
    batch_jobs: int

    @property
    def total(self) -> float:
        """Published -> vector readable: what the benchmark is about."""
        return self.done - self.ts

    @property
    def stream(self) -> float:
        """Published -> job emitted by the stream worker (includes its age-flush wait)."""
        return self.emitted - self.ts

    @property
    def embed(self) -> float:
        """Job emitted -> vector readable (the job's Kafka hop, the embed loop, the fold)."""
        return self.done - self.emitted

    @property
    def queue(self) -> float:
        """Job emitted -> the embed worker's poll returned it."""
        return self.polled - self.emitted

    @property
    def fold(self) -> float:
        """Poll returned -> upsert returned (retrieve, embed, interest math, upsert)."""
        return self.done - self.polled

    def to_line(self) -> str:
        """The tab-separated line the embed worker writes for this event."""
        return (
            f"{self.event_id}\t{self.ts:.0f}\t{self.first_seen:.0f}\t{self.emitted:.0f}\t"
            f"{self.polled:.1f}\t{self.done:.1f}\t{self.batch_jobs}\n"
        )


def parse_lines(text: str) -> list[EventTiming]:
    """Timings from complete lines written by :meth:`EventTiming.to_line`; a malformed line
    (a torn write) is skipped, not fatal.

    >>> t = EventTiming("e1", 1000, 1001, 1900, 1950.5, 2100.5, 3)
    >>> parse_lines(t.to_line() + "torn\\tline\\n") == [t]
    True
    """
    out = []
    for line in text.splitlines():
        parts = line.split("\t")
        if len(parts) != 7:
            continue
        try:
            ts, first_seen, emitted, polled, done = (float(p) for p in parts[1:6])
            out.append(EventTiming(parts[0], ts, first_seen, emitted, polled, done, int(parts[6])))
        except ValueError:
            continue
    return out


def first_by_id(timings: Iterable[EventTiming], wanted: AbstractSet[str]) -> dict[str, EventTiming]:
    """The earliest ``done`` per wanted event id: a replayed job (after a rebalance) folds
    nothing new, so the first write is when the vector became readable."""
    out: dict[str, EventTiming] = {}
    for t in timings:
        if t.event_id in wanted and (t.event_id not in out or t.done < out[t.event_id].done):
            out[t.event_id] = t
    return out


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (the smallest value with at least ``q`` % at or below it);
    NaN for no values.

    >>> percentile(range(1, 101), 99), percentile(range(1, 101), 50), percentile([7.0], 99)
    (99, 50, 7.0)
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[min(len(ordered), max(rank, 1)) - 1]


def summarize(values: Sequence[float]) -> dict[str, float]:
    """count, mean, p50, p90, p99, max (ms) of ``values``; NaN where there are none."""
    return {
        "count": len(values),
        "mean": sum(values) / len(values) if values else math.nan,
        "p50": percentile(values, 50),
        "p90": percentile(values, 90),
        "p99": percentile(values, 99),
        "max": max(values, default=math.nan),
    }


def histogram(values: Iterable[float], edges: Sequence[float] = EDGES_MS) -> dict[str, Any]:
    """Counts per bucket, for the JSON: ``counts[i]`` holds the values in (``le[i-1]``,
    ``le[i]``] (the first bucket everything up to ``le[0]``); ``counts[-1]``, one more than there
    are edges, those above ``le[-1]``.

    >>> histogram([0, 50, 50.5, 120, 9e9], edges=[50, 100, 150])["counts"]
    [2, 1, 1, 1]
    """
    counts = [0] * (len(edges) + 1)
    for v in values:
        counts[bisect.bisect_left(edges, v)] += 1
    return {"unit": "ms", "le": list(edges), "counts": counts}


def histogram_percentile(le: Sequence[float], counts: Sequence[int], q: float) -> float:
    """The upper edge of the bucket holding the ``q`` percentile (inf when it lies above the last
    edge): all a reader of a histogram can tell, an upper bound on the exact value.

    >>> histogram_percentile([50, 100, 150], [2, 1, 1, 1], 50)
    100
    >>> histogram_percentile([1], [0, 3], 50)
    inf
    """
    total = sum(counts)
    if not total:
        return math.nan
    need = math.ceil(q / 100 * total)
    seen = 0
    for edge, count in zip([*le, math.inf], counts, strict=True):
        seen += count
        if seen >= need:
            return edge
    return math.inf


def stage_split(timings: Sequence[EventTiming]) -> dict[str, object]:
    """Where the time goes: each stage's percentiles, each side's share of the mean total (means
    add up, percentiles do not), and the same shares among the slowest 1 % of events (what makes
    the p99)."""
    stages = ("stream", "embed", "queue", "fold")
    out: dict[str, object] = {s: summarize([getattr(t, s) for t in timings]) for s in stages}
    out["share_of_mean"] = _shares(timings)
    slowest = sorted(timings, key=lambda t: t.total)[-max(1, len(timings) // 100) :]
    out["share_of_mean_slowest_1pct"] = _shares(slowest)
    return out


def _shares(timings: Sequence[EventTiming]) -> dict[str, float]:
    total = sum(t.total for t in timings)
    if not timings or total <= 0:
        return {"stream": math.nan, "embed": math.nan}
    return {
        "stream": sum(t.stream for t in timings) / total,
        "embed": sum(t.embed for t in timings) / total,
    }


def over_time(
    timings: Sequence[EventTiming], start_ms: float, width_s: float
) -> list[dict[str, float]]:
    """p50/p99 of the events sent in each ``width_s`` window from ``start_ms``: a latency that
    grows window after window means the pipeline is not keeping up with the rate."""
    windows: dict[int, list[float]] = {}
    for t in timings:
        windows.setdefault(int((t.ts - start_ms) // (width_s * 1000)), []).append(t.total)
    return [
        {
            "from_s": k * width_s,
            "events": len(v),
            "p50": percentile(v, 50),
            "p99": percentile(v, 99),
        }
        for k, v in sorted(windows.items())
    ]


def achieved_rate(send_ms: Sequence[float]) -> float:
    """Events per second over the span of the sends (the first send to the last).

    >>> achieved_rate([0, 500, 1000])
    2.0
    """
    if len(send_ms) < 2:
        return math.nan
    span = (max(send_ms) - min(send_ms)) / 1000
    return (len(send_ms) - 1) / span if span > 0 else math.inf


def steady_rate(times_ms: Sequence[float]) -> float:
    """Events per second between the 5 % and the 95 % marks of ``times_ms`` (the vectors' write
    times): the rate the pipeline delivered, without its start and its tail. Below the send rate,
    a backlog grew.

    >>> steady_rate([i * 2.0 for i in range(1000)])  # one every 2 ms
    500.0
    """
    if len(times_ms) < 20:
        return math.nan
    ordered = sorted(times_ms)
    lo, hi = round(0.05 * (len(ordered) - 1)), round(0.95 * (len(ordered) - 1))
    span = (ordered[hi] - ordered[lo]) / 1000
    return (hi - lo) / span if span > 0 else math.inf


def user_for(i: int, users: int, heavy: int = 5) -> str:
    """The user of the ``i``-th event: one event in ten goes to one of ``heavy`` heavy users
    (each heavy event to the next of them), the rest over ``users`` users in a scrambled round
    robin -- the mix of ``bench.stream_bench``'s latency phase.

    >>> [user_for(i, 100) for i in (0, 1, 2, 10, 11, 100)]
    ['heavy-0', 'u-0', 'u-19', 'heavy-1', 'u-71', 'heavy-0']
    """
    if heavy and i % 10 == 0:
        return f"heavy-{(i // 10) % heavy}"
    j = i - i // 10 - 1 if heavy else i  # the index among the events to the other users
    return f"u-{(j * 7919) % users}"


def prometheus_samples(text: str) -> dict[str, float]:
    """Every sample of a Prometheus text exposition as ``name{label="v",...}`` -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return out


def prometheus_histogram(
    before: Mapping[str, float], after: Mapping[str, float], name: str
) -> dict[str, Any]:
    """The change of histogram ``name`` between two scrapes, in :func:`histogram`'s layout
    (non-cumulative counts, ``counts[-1]`` above the last finite edge; seconds), with its count
    and sum.

    >>> a = {'f_bucket{le="0.5"}': 1, 'f_bucket{le="1.0"}': 3, 'f_bucket{le="+Inf"}': 4}
    >>> b = {'f_bucket{le="0.5"}': 2, 'f_bucket{le="1.0"}': 7, 'f_bucket{le="+Inf"}': 9}
    >>> prometheus_histogram(a, b, "f")["counts"]
    [1, 3, 1]
    """
    prefix = f'{name}_bucket{{le="'
    bounds = sorted(
        (float(key[len(prefix) : -2]), after[key] - before.get(key, 0.0))
        for key in after
        if key.startswith(prefix)
    )
    counts, previous = [], 0.0
    for _, cumulative in bounds:
        counts.append(round(cumulative - previous))
        previous = cumulative
    return {
        "unit": "s",
        "le": [b for b, _ in bounds if math.isfinite(b)],
        "counts": counts,
        "count": round(after.get(f"{name}_count", 0.0) - before.get(f"{name}_count", 0.0)),
        "sum": after.get(f"{name}_sum", 0.0) - before.get(f"{name}_sum", 0.0),
    }
