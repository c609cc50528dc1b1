"""Consumer lag arithmetic and the group status rules. Pure: no I/O, no clock.

:mod:`streams.lag` reads offsets from the brokers and hands them here; the ``lag`` command and the
Prometheus collector both print what this module computes, so the two always agree.

Lag of one partition (as Kafka's consumer-groups tool and kafka-lag-exporter define it)::

    lag = max(0, log-end offset - committed offset)

The log-end offset is the high watermark (``read_uncommitted``), which is what Kafka's tool asks
for. A partition with no committed offset has **no** lag number (``None``, printed ``-``): the
log-end offset would be a made-up backlog for a group that may start at ``latest``. Kafka's tool
does not clamp: a committed offset beyond the log end (topic recreated, unclean leader election)
prints a negative LAG there and 0 here.

Lag in seconds is the age of the oldest unconsumed record: now minus the timestamp of the record at
the committed offset. One read gives it (the CLI needs no history), it is exact rather than
interpolated, and an idle caught-up partition is simply 0 — kafka-lag-exporter's interpolation needs
a table of past log-end offsets, is NaN until that table fills and for idle partitions. Its cost:
one short fetch per lagging partition per read, and it trusts record timestamps (producer
``CreateTime`` unless the topic uses ``LogAppendTime``).

Group status (after Burrow's evaluator; statuses ordered by severity)::

    unknown  no partition has a committed offset: nothing to judge
    OK       every measured partition has lag 0 now, or (window) each lagging partition had
             lag 0 at some sample or its lag went down at some step
    stopped  lag > 0 and the group has no members: nobody will work the backlog off
    stalled  (window) members present, lag > 0 at every sample and the committed offset of some
             partition never moved across the window (Burrow's STALL; its STOP needs commit
             times, which Kafka does not return — a dead group shows up as ``stopped``)
    lagging  lag > 0 with members, and either one sample only (a backlog whose trend is unknown),
             or (window) offsets move but lag never shrinks (Burrow's WARN), or a committed
             offset went backwards (Burrow's REWIND: a reset or a reprocessing)

The group's status is its worst partition's. What one sample can tell: caught up (OK), a backlog
nobody consumes (stopped), or a backlog with consumers (lagging — a busy healthy consumer always
has some). It cannot tell a shrinking backlog from a growing one, or a stuck consumer from a
working one: that needs a window of samples (``lag --watch``), spaced wider than the group's
commit interval.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from itertools import pairwise


class Status(StrEnum):
    """A group's health, in increasing severity."""

    UNKNOWN = "unknown"
    OK = "OK"
    LAGGING = "lagging"
    STALLED = "stalled"
    STOPPED = "stopped"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {
    Status.UNKNOWN: 0,
    Status.OK: 1,
    Status.LAGGING: 2,
    Status.STALLED: 3,
    Status.STOPPED: 4,
}

#: Samples kept per group by ``lag --watch`` (Burrow keeps the last 10 commits).
DEFAULT_WINDOW = 10


def partition_lag(committed: int | None, log_end: int | None) -> int | None:
    """``max(0, log_end - committed)``; ``None`` when either offset is unknown."""
    if committed is None or committed < 0 or log_end is None or log_end < 0:
        return None
    return max(0, log_end - committed)


def lag_seconds(lag: int | None, oldest_timestamp_ms: int | None, now_s: float) -> float | None:
    """Age of the oldest unconsumed record, in seconds.

    0 when there is no backlog; ``None`` when the lag is unknown or the record at the committed
    offset could not be read (or carries no timestamp, Kafka's -1). A record stamped in the future
    (producer clock ahead) counts as age 0 rather than a negative age.
    """
    if lag is None:
        return None
    if lag == 0:
        return 0.0
    if oldest_timestamp_ms is None or oldest_timestamp_ms < 0:
        return None
    return max(0.0, now_s - oldest_timestamp_ms / 1000.0)


@dataclass(frozen=True, slots=True)
class PartitionSample:
    """One partition of one group at one read."""

    topic: str
    partition: int
    committed: int | None  # None: the group has no committed offset here
    log_end: int | None  # None: the partition is not in the cluster's metadata
    lag_seconds: float | None = None

    @property
    def lag(self) -> int | None:
        return partition_lag(self.committed, self.log_end)

    @property
    def key(self) -> tuple[str, int]:
        return (self.topic, self.partition)


@dataclass(frozen=True, slots=True)
class GroupTotals:
    """A group's aggregates over the partitions that have a lag number (``None``: none has)."""

    lag_max: int | None
    lag_sum: int | None
    lag_seconds_max: float | None
    measured: int  # partitions with a lag number


def group_totals(partitions: Iterable[PartitionSample]) -> GroupTotals:
    lags = [p.lag for p in partitions if p.lag is not None]
    seconds = [p.lag_seconds for p in partitions if p.lag_seconds is not None]
    return GroupTotals(
        lag_max=max(lags) if lags else None,
        lag_sum=sum(lags) if lags else None,
        lag_seconds_max=max(seconds) if seconds else None,
        measured=len(lags),
    )


@dataclass(frozen=True, slots=True)
class GroupSample:
    """A consumer group at one read: broker state, members and its partitions."""

    group: str
    taken_at: float  # wall time of the read, seconds since the epoch
    state: str  # the coordinator's word: Stable, Empty, Dead, PreparingRebalance, ...
    members: int
    partitions: tuple[PartitionSample, ...] = ()

    @property
    def totals(self) -> GroupTotals:
        return group_totals(self.partitions)


@dataclass(frozen=True, slots=True)
class Verdict:
    status: Status
    reason: str


def evaluate(window: Sequence[GroupSample]) -> Verdict:
    """The status of a group from its samples, oldest first (one sample is a valid window)."""
    if not window:
        return Verdict(Status.UNKNOWN, "no sample")
    latest = window[-1]
    totals = latest.totals
    if totals.lag_sum is None:
        who = "no members" if latest.members == 0 else f"{latest.members} member(s)"
        return Verdict(Status.UNKNOWN, f"no committed offsets ({who})")
    lagging = [p for p in latest.partitions if p.lag]
    if not lagging:
        return Verdict(Status.OK, "caught up")
    backlog = f"lag {totals.lag_sum} on {_count(len(lagging), 'partition')}"
    if latest.members == 0:
        return Verdict(Status.STOPPED, f"no members, {backlog}")
    if len(window) < 2:
        return Verdict(Status.LAGGING, f"{backlog}; one sample cannot show its trend")
    verdicts = [_partition_verdict(_history(window, p.key)) for p in lagging]
    worst = max(v.status.severity for v in verdicts)
    reasons = sorted({v.reason for v in verdicts if v.status.severity == worst})
    status = next(v.status for v in verdicts if v.status.severity == worst)
    return Verdict(status, f"{backlog}: {'; '.join(reasons)}")


def _history(window: Sequence[GroupSample], key: tuple[str, int]) -> list[tuple[int, int]]:
    """(committed, lag) of one partition across the window, where it had a lag number."""
    out: list[tuple[int, int]] = []
    for sample in window:
        for p in sample.partitions:
            if p.key == key and p.committed is not None and p.lag is not None:
                out.append((p.committed, p.lag))
    return out


def _partition_verdict(history: list[tuple[int, int]]) -> Verdict:
    """Burrow's rules for one partition that has lag now (members present)."""
    if len(history) < 2:
        return Verdict(Status.LAGGING, "new partition, trend unknown")
    offsets = [c for c, _ in history]
    lags = [lag for _, lag in history]
    if 0 in lags:
        return Verdict(Status.OK, "caught up within the window")
    if any(b < a for a, b in pairwise(offsets)):
        return Verdict(Status.LAGGING, "committed offset went backwards")
    if offsets[0] == offsets[-1]:
        return Verdict(Status.STALLED, "committed offset did not move across the window")
    if all(b >= a for a, b in pairwise(lags)):
        return Verdict(Status.LAGGING, "offsets move but lag never shrinks")
    return Verdict(Status.OK, "working the backlog off")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


@dataclass
class SampleWindow:
    """The last ``size`` samples of each group, for ``lag --watch`` and the collector."""

    size: int = DEFAULT_WINDOW
    _samples: dict[str, deque[GroupSample]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError("a window holds at least one sample")

    def add(self, sample: GroupSample) -> Verdict:
        """Record ``sample`` and return the group's status over its window."""
        window = self._samples.setdefault(sample.group, deque(maxlen=self.size))
        window.append(sample)
        return evaluate(list(window))

    def samples(self, group: str) -> list[GroupSample]:
        return list(self._samples.get(group, ()))


def sample_to_dict(sample: GroupSample, verdict: Verdict) -> dict[str, object]:
    """The JSON shape of one group (``lag --json``); ``None`` where the tool prints ``-``."""
    totals = sample.totals
    return {
        "group": sample.group,
        "state": sample.state,
        "members": sample.members,
        "status": str(verdict.status),
        "reason": verdict.reason,
        "taken_at": sample.taken_at,
        "lag_max": totals.lag_max,
        "lag_sum": totals.lag_sum,
        "lag_seconds_max": _round(totals.lag_seconds_max),
        "partitions": [
            {
                "topic": p.topic,
                "partition": p.partition,
                "current_offset": p.committed,
                "log_end_offset": p.log_end,
                "lag": p.lag,
                "lag_seconds": _round(p.lag_seconds),
            }
            for p in sample.partitions
        ],
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
