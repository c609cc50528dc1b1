"""One user's stream state: numbering, dedupe, pending events, activity windows. Pure, no I/O.

A stream worker keeps one :class:`UserState` per user in a faust table (changelog-backed, so it
survives restarts) in the compact byte form of :meth:`UserState.to_bytes`. It holds:

* ``last_n`` -- every accepted event gets the user's next number ``n`` (1, 2, 3 ...). Numbers are
  never reused: an update job's ``seq`` is the ``n`` of its last event and the embed worker drops
  events with ``n <=`` the seq it stored (see :mod:`streams.contracts.jobs`).
* ``offsets`` -- per source topic, the offset of the last record applied. After a crash Kafka
  replays records from the last committed offset; those at or below this offset are already in
  the state and are skipped exactly (:attr:`Applied.REPLAY`), however many there are.
* a dedupe ring of the last ``dedupe_window`` accepted event ids (as 64-bit BLAKE2b hashes, 8 bytes
  each; a false duplicate needs a 64-bit collision among ~100 ids, about 1e-16). At-least-once
  producers retry, so the same event_id can arrive twice at different offsets; the second one is
  :attr:`Applied.DUPLICATE` and gets no number.
* the pending events since the last flush, in arrival order, bounded by ``pending_cap`` events and
  ``pending_max_bytes`` (a job and a changelog record must fit Kafka's 1 MiB default). Beyond
  either bound the oldest pending events are *folded*: their content is dropped but they are
  counted by type, and the next job reports the counts. Nothing is dropped without a counter.
* activity counts per event type in event-time windows (tumbling when hop == size, hopping
  otherwise), kept as per-hop buckets relative to the user's newest event time.

The byte form is JSON with one-letter keys, ``"f"`` (first-seen time of the oldest pending event,
0 when none) first, so :func:`has_pending` can tell from a prefix whether a stored state has
pending events without decoding it.

>>> limits = StateLimits()
>>> s = UserState()
>>> from streams.contracts.events import Event
>>> e = Event("e1", "u1", "click", 60_500, 1.0, text="gans")
>>> s.apply(e, seen_ms=1000, source=0, offset=7, limits=limits).outcome
<Applied.NEW: 'new'>
>>> s.apply(e, seen_ms=1001, source=0, offset=8, limits=limits).outcome
<Applied.DUPLICATE: 'duplicate'>
>>> s.apply(e, seen_ms=1002, source=0, offset=8, limits=limits).outcome
<Applied.REPLAY: 'replay'>
>>> job = s.build_job("u1", now_ms=1500, limits=limits)
>>> (job.seq, [x.event_id for x in job.events], job.activity["60000"])
(1, ['e1'], {'click': 1})
>>> UserState.from_bytes(s.to_bytes()).to_bytes() == s.to_bytes()
True
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Final, NamedTuple

import orjson

from streams.contracts.events import Event
from streams.contracts.jobs import JobEvent, UpdateJob
from streams.stream.triggers import PendingView

#: Number of source topics whose offsets a state tracks (the events topic, the repartition topic).
SOURCES: Final = 2
_HASH_BYTES: Final = 8
_NO_PENDING_PREFIX: Final = b'{"f":0,'


class StateError(ValueError):
    """A stored state this version cannot read (never caused by event input)."""


@dataclass(frozen=True, slots=True)
class ActivityWindow:
    """An event-time window of ``size_ms``, advancing by ``hop_ms`` (== size: tumbling)."""

    size_ms: int
    hop_ms: int
    #: The window's key in a state's activity (``"size:hop"``) and in a job's (``"size"``);
    #: computed once, they are looked up for every event.
    state_key: str = field(init=False, repr=False, compare=False)
    job_key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.hop_ms < 1 or self.size_ms < self.hop_ms or self.size_ms % self.hop_ms:
            raise ValueError(
                f"window size {self.size_ms} ms must be a positive multiple of hop {self.hop_ms} ms"
            )
        object.__setattr__(self, "state_key", f"{self.size_ms}:{self.hop_ms}")
        object.__setattr__(self, "job_key", str(self.size_ms))

    @property
    def buckets(self) -> int:
        return self.size_ms // self.hop_ms


@dataclass(frozen=True, slots=True)
class StateLimits:
    """Bounds on one user's state (built from :class:`streams.stream.settings.StreamSettings`)."""

    pending_cap: int = 512
    pending_max_bytes: int = 256 * 1024
    dedupe_window: int = 128
    windows: tuple[ActivityWindow, ...] = field(
        default_factory=lambda: (
            ActivityWindow(60_000, 60_000),
            ActivityWindow(3_600_000, 3_600_000),
            ActivityWindow(86_400_000, 86_400_000),
        )
    )

    def __post_init__(self) -> None:
        if self.pending_cap < 1:
            raise ValueError(f"pending_cap must be >= 1, got {self.pending_cap}")
        if self.pending_max_bytes < 1:
            raise ValueError(f"pending_max_bytes must be >= 1, got {self.pending_max_bytes}")
        if self.dedupe_window < 0:
            raise ValueError(f"dedupe_window must be >= 0, got {self.dedupe_window}")


class Applied(StrEnum):
    """What :meth:`UserState.apply` did with an event (also a metric label)."""

    NEW = "new"
    DUPLICATE = "duplicate"
    REPLAY = "replay"


class ApplyResult(NamedTuple):
    outcome: Applied
    #: Pending events folded by this call (their content dropped, their count kept).
    folded: int = 0


def event_hash(event_id: str) -> bytes:
    """The 8-byte dedupe key of an event id."""
    return hashlib.blake2b(event_id.encode(), digest_size=_HASH_BYTES).digest()


def has_pending(raw: bytes) -> bool:
    """Whether a state in :meth:`UserState.to_bytes` form has pending events (no decoding)."""
    return not raw.startswith(_NO_PENDING_PREFIX)


def _event_bytes(e: JobEvent) -> int:
    """Approximate size of one pending event in the job/changelog JSON (UTF-8)."""
    size = 48 + len(e.event_id.encode()) + len(e.type)
    if e.item_id is not None:
        size += len(e.item_id.encode())
    if e.text is not None:
        size += len(e.text.encode())
    for tag in e.tags:
        size += len(tag.encode()) + 3
    return size


class UserState:
    """Mutable per-user state; see the module docstring. Not thread-safe (one owner at a time)."""

    __slots__ = (
        "activity",
        "first_seen_ms",
        "folded",
        "folded_events",
        "last_flush_ms",
        "last_n",
        "max_ts_ms",
        "min_ts_ms",
        "offsets",
        "pending",
        "pending_bytes",
        "recent",
    )

    def __init__(self) -> None:
        self.last_n = 0
        self.offsets: list[int] = [-1] * SOURCES
        self.pending: list[JobEvent] = []
        self.pending_bytes = 0
        self.first_seen_ms = 0
        self.min_ts_ms = 0
        self.max_ts_ms = -1
        self.folded: dict[str, int] = {}
        self.folded_events = 0
        self.recent = b""
        self.activity: dict[str, list[list[Any]]] = {}
        self.last_flush_ms = 0

    # -- events ------------------------------------------------------------------------------

    def apply(
        self, event: Event, *, seen_ms: int, source: int, offset: int, limits: StateLimits
    ) -> ApplyResult:
        """Take one event read from ``source`` at ``offset``.

        ``seen_ms`` starts the event's latency clock (the oldest pending event's becomes the
        job's ``first_seen_ms``); the stream worker passes the record's Kafka timestamp clamped
        to [the user's last flush, now].
        """
        if offset <= self.offsets[source]:
            return ApplyResult(Applied.REPLAY)
        self.offsets[source] = offset
        if limits.dedupe_window:
            h = event_hash(event.event_id)
            if self._recent_contains(h):
                return ApplyResult(Applied.DUPLICATE)
            self.recent = (self.recent + h)[-limits.dedupe_window * _HASH_BYTES :]
        self.last_n += 1
        job_event = JobEvent(
            n=self.last_n,
            event_id=event.event_id,
            type=event.type,
            weight=event.weight,
            ts_ms=event.ts_ms,
            item_id=event.item_id,
            text=event.text,
            tags=event.tags,
        )
        if not self.pending and not self.folded_events:
            self.first_seen_ms = seen_ms
            self.min_ts_ms = event.ts_ms
        else:
            self.min_ts_ms = min(self.min_ts_ms, event.ts_ms)
        self.pending.append(job_event)
        self.pending_bytes += _event_bytes(job_event)
        self.max_ts_ms = max(self.max_ts_ms, event.ts_ms)
        self._count_activity(event.type, event.ts_ms, limits)
        return ApplyResult(Applied.NEW, self._fold(limits))

    def _recent_contains(self, h: bytes) -> bool:
        ring = self.recent
        i = ring.find(h)
        while i >= 0:
            if i % _HASH_BYTES == 0:
                return True
            i = ring.find(h, i + 1)
        return False

    def _fold(self, limits: StateLimits) -> int:
        """Fold the oldest pending events while over the count or byte bound; keep the newest."""
        drop = 0
        size = self.pending_bytes
        over = len(self.pending) - limits.pending_cap
        while drop < len(self.pending) - 1 and (drop < over or size > limits.pending_max_bytes):
            size -= _event_bytes(self.pending[drop])
            drop += 1
        if not drop:
            return 0
        for e in self.pending[:drop]:
            self.folded[e.type] = self.folded.get(e.type, 0) + 1
        del self.pending[:drop]
        self.pending_bytes = size
        self.folded_events += drop
        return drop

    def _count_activity(self, type_: str, ts_ms: int, limits: StateLimits) -> None:
        for w in limits.windows:
            buckets = self.activity.setdefault(w.state_key, [])
            start = ts_ms - ts_ms % w.hop_ms
            newest = self.max_ts_ms - self.max_ts_ms % w.hop_ms
            oldest_kept = newest - w.size_ms + w.hop_ms
            # Drop buckets that fell out of the window ending at the newest bucket.
            while buckets and buckets[0][0] < oldest_kept:
                buckets.pop(0)
            if start < oldest_kept:
                continue  # a late event: its window is gone, it only counts as pending
            for bucket in buckets:
                if bucket[0] == start:
                    counts: dict[str, int] = bucket[1]
                    counts[type_] = counts.get(type_, 0) + 1
                    break
            else:
                buckets.append([start, {type_: 1}])
                buckets.sort(key=lambda b: int(b[0]))

    def activity_counts(self, limits: StateLimits) -> dict[str, dict[str, int]]:
        """Counts by type per window size (ms, as a string), over the window ending at the
        bucket of the user's newest event."""
        out: dict[str, dict[str, int]] = {}
        for w in limits.windows:
            buckets = self.activity.get(w.state_key)
            if not buckets:
                continue
            if len(buckets) == 1:  # the common case: one bucket, copied
                out[w.job_key] = dict(buckets[0][1])
                continue
            total: dict[str, int] = {}
            for _start, counts in buckets:
                for t, c in counts.items():
                    total[t] = total.get(t, 0) + c
            out[w.job_key] = total
        return out

    # -- flushing ----------------------------------------------------------------------------

    def view(self) -> PendingView:
        """The trigger policy's view of this state."""
        return PendingView(
            count=len(self.pending),
            first_seen_ms=self.first_seen_ms,
            last_flush_ms=self.last_flush_ms,
            min_ts_ms=self.min_ts_ms,
            max_ts_ms=self.max_ts_ms,
        )

    def build_job(self, user_id: str, *, now_ms: int, limits: StateLimits) -> UpdateJob:
        """The update job for everything pending (the state is unchanged until flushed)."""
        return UpdateJob(
            user_id=user_id,
            events=tuple(self.pending),
            first_seen_ms=self.first_seen_ms,
            emitted_ms=now_ms,
            activity=self.activity_counts(limits),
            folded=dict(self.folded),
        )

    def mark_flushed(self, through_n: int, *, now_ms: int) -> int:
        """Drop pending events numbered ``<= through_n`` (their job was delivered); return how
        many. Folded events are older than every pending one, so they go with the first flush."""
        keep = [e for e in self.pending if e.n > through_n]
        dropped = len(self.pending) - len(keep)
        if dropped or self.folded_events:
            self.pending = keep
            self.pending_bytes = sum(_event_bytes(e) for e in keep)
            self.folded = {}
            self.folded_events = 0
            self.last_flush_ms = now_ms
            if keep:
                self.min_ts_ms = min(e.ts_ms for e in keep)
            else:
                self.first_seen_ms = 0
                self.min_ts_ms = 0
        return dropped

    def compact(self) -> bool:
        """Shrink an idle user's state to what correctness still needs -- the numbering
        (``last_n``), the replay offsets and the last flush -- dropping the dedupe ring and the
        activity windows; False (unchanged) while events are pending or nothing is left to drop.

        The caller decides "idle" (``StreamSettings.state_idle_after_s``, at least the largest
        activity window, so every window is empty by then): that is also how long after a user's
        last flush duplicates are still recognised -- the dedupe horizon.

        >>> from streams.contracts.events import Event
        >>> s, limits = UserState(), StateLimits()
        >>> _ = s.apply(Event("e1", "u1", "click", 0, 1.0, text="x"), seen_ms=0, source=0,
        ...             offset=3, limits=limits)
        >>> s.compact()  # e1 is pending
        False
        >>> _ = s.mark_flushed(1, now_ms=10)
        >>> s.compact(), len(s.to_bytes()) < 60, s.last_n, s.offsets
        (True, True, 1, [3, -1])
        """
        if self.pending or self.folded_events or not (self.recent or self.activity):
            return False
        self.recent = b""
        self.activity = {}
        return True

    # -- storage -----------------------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """The compact stored form (JSON, ``"f"`` first; see :func:`has_pending`)."""
        d: dict[str, Any] = {"f": self.first_seen_ms if self.pending else 0, "n": self.last_n}
        d["o"] = self.offsets
        if self.last_flush_ms:
            d["l"] = self.last_flush_ms
        d["t"] = [self.min_ts_ms, self.max_ts_ms]
        if self.pending:
            d["p"] = [
                [e.n, e.event_id, e.type, e.weight, e.ts_ms, e.item_id, e.text, list(e.tags)]
                for e in self.pending
            ]
        if self.folded_events:
            d["z"] = [self.folded_events, self.folded]
        if self.recent:
            d["d"] = base64.b64encode(self.recent).decode("ascii")
        activity = {k: v for k, v in self.activity.items() if v}
        if activity:
            d["a"] = activity
        return orjson.dumps(d)

    @classmethod
    def from_bytes(cls, raw: bytes) -> UserState:
        """Inverse of :meth:`to_bytes`; raises :class:`StateError` on anything else."""
        try:
            d = orjson.loads(raw)
            s = cls()
            s.last_n = int(d["n"])
            offsets = [int(o) for o in d["o"]]
            s.offsets = (offsets + [-1] * SOURCES)[:SOURCES]
            s.last_flush_ms = int(d.get("l", 0))
            s.min_ts_ms, s.max_ts_ms = (int(x) for x in d["t"])
            s.pending = [
                JobEvent(
                    n=int(p[0]),
                    event_id=p[1],
                    type=p[2],
                    weight=float(p[3]),
                    ts_ms=int(p[4]),
                    item_id=p[5],
                    text=p[6],
                    tags=tuple(p[7]),
                )
                for p in d.get("p", ())
            ]
            s.pending_bytes = sum(_event_bytes(e) for e in s.pending)
            if s.pending:
                s.first_seen_ms = int(d["f"])
            if "z" in d:
                s.folded_events = int(d["z"][0])
                s.folded = {str(t): int(c) for t, c in d["z"][1].items()}
            s.recent = base64.b64decode(d["d"]) if "d" in d else b""
            s.activity = {str(k): v for k, v in d.get("a", {}).items()}
        except (ValueError, KeyError, TypeError, IndexError) as exc:
            raise StateError(f"unreadable user state: {exc!r}") from None
        return s
