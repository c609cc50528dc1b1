"""Live item popularity: decayed interaction counts per item, kept by the stream workers.

The number (what ``models.recommend`` reads from the item payload field ``popularity``)::

    popularity(t) = Σ wᵢ · 2^(−(t − tᵢ)/h)

over the item's events with a positive weight ``wᵢ`` (the event's weight: view 0.5, click 1,
purchase 3 ...), ``tᵢ`` the event time, ``h`` the half-life
(``INTEREST_STREAM_POPULARITY_HALF_LIFE_S``, 7 days). Negative events (dislike, skip) do not count
and do not subtract: popularity is how much attention an item gets, the prior is
``ln(1 + popularity)`` and needs a value ≥ 0, and a prior that a few dislikes could push below an
unseen item's would be easy to game; what a user dislikes is their ``negative`` dimension's job.

:class:`DecayedCount` is the estimator (``update``/``get``, like river's stats): it keeps the sum
decayed to its newest event time ``T`` (the interest dimensions' trick, see
:mod:`models.interests`), so the result depends neither on event order nor on how events were
grouped, and two counts merge exactly. Replays are the caller's business: the count cannot tell a
replayed event from a new one (see below for how the workers make replays exact).

The path through the stream workers (:mod:`streams.stream.app` wires it):

1. The user agent (events are keyed by user) adds each *new* event with an ``item_id`` and a
   positive weight to a per-batch :class:`Contributions` (one dict update per event) and, after
   the batch, sends one record per item partition to the item repartition topic
   (``<app_id>-item-repartition``, partition ``murmur2(item_id) % N``): the batch's decayed
   count per item. A Zipf catalogue folds many events into one entry; faust sees one record per
   partition per batch, not one per event.
2. The item agent applies those records to the item table (key ``item_id``, value
   :class:`ItemState`) with :class:`PopularityProcessor`. Every item in a record lives in the
   record's partition, so the record's offset, kept per item, makes a replay (restart before the
   commit) exact: a record at or below an item's offset is skipped.
3. Every ``popularity_interval_s`` the timer emits the current popularity of items that moved by
   more than ``popularity_tolerance`` (relative) since their last emitted value -- new
   interactions, or decay alone -- to the popularity topic (``interest.items.popularity``,
   key ``item_id``, compacted; :class:`PopularityUpdate`). An item decayed below
   ``popularity_floor`` is emitted once as 0 and dropped from the table.
4. The embed worker (the one process that owns the embedded Qdrant) sets the payload field on
   items that exist in ``items`` and commits afterwards.

Exactness: per-item offsets make step 2 exact. Step 1 is at-least-once at a kill -9: a batch's
contributions are sent right after its user-state writes are handed to the producer, so a crash
that loses those writes but not the contributions counts the batch's new events again on
replay (the window is the producer's in-flight time). Graceful stops and rebalances lose and
repeat nothing.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, Final

import orjson

from streams.contracts.popularity import InvalidRecord, PopularityUpdate
from streams.stream.table_owner import StateStore, TableOwner
from streams.stream.types import Record, Sink, StreamStats

log = logging.getLogger(__name__)

DAY_S: Final = 86_400.0


def decay(dt_ms: float, half_life_ms: float) -> float:
    """``2^(−dt/h)``; 1.0 for ``dt ≤ 0`` (a count never grows by waiting)."""
    return 1.0 if dt_ms <= 0 else math.exp2(-dt_ms / half_life_ms)


class DecayedCount:
    """An exponentially decayed sum of weights: ``Σ wᵢ · 2^(−(t − tᵢ)/h)``.

    ``mass`` is the sum at ``ref_ms``, the newest event time seen. Order-independent and
    mergeable (``merge`` is an ``update`` with a whole count), so any grouping of the same events
    gives the same number up to float rounding.

    >>> c = DecayedCount(half_life_s=10.0)
    >>> c.update(2.0, ts_ms=0).update(1.0, ts_ms=10_000).get(now_ms=20_000)
    1.0
    """

    __slots__ = ("half_life_ms", "mass", "ref_ms")

    def __init__(self, half_life_s: float, mass: float = 0.0, ref_ms: int = 0) -> None:
        if not half_life_s > 0:
            raise ValueError(f"half_life_s must be > 0, got {half_life_s}")
        self.half_life_ms = half_life_s * 1000.0
        self.mass = mass
        self.ref_ms = ref_ms

    def update(self, weight: float, ts_ms: int) -> DecayedCount:
        """Add an event of ``weight`` (finite, ≥ 0) at event time ``ts_ms``."""
        if not (weight >= 0 and math.isfinite(weight)):
            raise ValueError(f"weight must be finite and >= 0, got {weight}")
        if self.mass == 0.0:
            self.mass, self.ref_ms = weight, ts_ms
        elif ts_ms > self.ref_ms:
            self.mass = self.mass * decay(ts_ms - self.ref_ms, self.half_life_ms) + weight
            self.ref_ms = ts_ms
        else:
            self.mass += weight * decay(self.ref_ms - ts_ms, self.half_life_ms)
        return self

    def merge(self, other: DecayedCount) -> DecayedCount:
        """Add another count (same half-life) as if its events had been added here."""
        return self.update(other.mass, other.ref_ms)

    def get(self, now_ms: int | None = None) -> float:
        """The count at ``now_ms`` (default: at the newest event); never above ``mass``."""
        if now_ms is None:
            return self.mass
        return self.mass * decay(now_ms - self.ref_ms, self.half_life_ms)

    def __repr__(self) -> str:
        return f"DecayedCount(mass={self.mass!r}, ref_ms={self.ref_ms}, h={self.half_life_ms}ms)"


# -- the item table's value -------------------------------------------------------------------

_STATE: Final = struct.Struct("<Bdqqd")
_STATE_VERSION: Final = 1
#: ``ItemState.emitted`` of an item whose popularity was never emitted.
NEVER: Final = -1.0


@dataclass(slots=True)
class ItemState:
    """An item's entry in the popularity table (33 bytes on the changelog)."""

    mass: float = 0.0
    ref_ms: int = 0
    #: Offset of the last applied record of the item repartition topic (its partition).
    offset: int = -1
    #: The last value sent to the popularity topic (:data:`NEVER`: none yet).
    emitted: float = NEVER

    def count(self, half_life_s: float) -> DecayedCount:
        return DecayedCount(half_life_s, self.mass, self.ref_ms)

    def to_bytes(self) -> bytes:
        return _STATE.pack(_STATE_VERSION, self.mass, self.ref_ms, self.offset, self.emitted)

    @classmethod
    def from_bytes(cls, raw: bytes) -> ItemState:
        version, mass, ref_ms, offset, emitted = _STATE.unpack(raw)
        if version != _STATE_VERSION:
            raise ValueError(f"item state version {version} is not {_STATE_VERSION}")
        return cls(mass, ref_ms, offset, emitted)


# -- records ----------------------------------------------------------------------------------


#: Most items in one record of the item repartition topic (item ids are at most 256 chars).
MAX_RECORD_ITEMS: Final = 1000


class Contributions:
    """One batch's decayed counts per item, turned into one record per item partition.

    ``add`` is the per-event cost of popularity in the user agent: a dict lookup and at most one
    ``exp2``.
    """

    def __init__(self, half_life_s: float) -> None:
        self.half_life_ms = half_life_s * 1000.0
        self._items: dict[str, list[float]] = {}  # item_id -> [mass, ref_ms]

    def add(self, item_id: str, weight: float, ts_ms: int) -> bool:
        """Count an event; False (and nothing counted) unless ``weight > 0``."""
        if not weight > 0:
            return False
        entry = self._items.get(item_id)
        if entry is None:
            self._items[item_id] = [weight, ts_ms]
        elif ts_ms > entry[1]:
            entry[0] = entry[0] * decay(ts_ms - entry[1], self.half_life_ms) + weight
            entry[1] = ts_ms
        else:
            entry[0] += weight * decay(entry[1] - ts_ms, self.half_life_ms)
        return True

    def __len__(self) -> int:
        return len(self._items)

    def drain(self, partition_of: Callable[[bytes], int]) -> list[tuple[int, bytes]]:
        """``(partition, record value)`` per item partition (several for more than
        :data:`MAX_RECORD_ITEMS` items: a record stays far below Kafka's 1 MB); empties the
        batch."""
        by_partition: dict[int, list[list[Any]]] = {}
        for item_id, (mass, ref_ms) in self._items.items():
            p = partition_of(item_id.encode())
            by_partition.setdefault(p, []).append([item_id, mass, int(ref_ms)])
        self._items = {}
        return [
            (p, encode_contributions(entries[i : i + MAX_RECORD_ITEMS]))
            for p, entries in sorted(by_partition.items())
            for i in range(0, len(entries), MAX_RECORD_ITEMS)
        ]


def encode_contributions(entries: Sequence[Sequence[Any]]) -> bytes:
    """``{"v": 1, "items": [[item_id, mass, ref_ms], ...]}`` as compact JSON."""
    return orjson.dumps({"v": 1, "items": entries})


def decode_contributions(raw: bytes | None) -> list[tuple[str, float, int]]:
    try:
        body = orjson.loads(raw or b"")
        if body["v"] != 1:
            raise InvalidRecord(f"contribution version {body['v']!r}")
        out = [(str(i), float(m), int(t)) for i, m, t in body["items"]]
    except InvalidRecord:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidRecord(f"unreadable contribution record: {exc}") from exc
    if any(not (m >= 0 and math.isfinite(m)) for _, m, _ in out):
        raise InvalidRecord("contribution mass must be finite and >= 0")
    return out


# -- when to emit -----------------------------------------------------------------------------


class Action(Enum):
    KEEP = "keep"
    EMIT = "emit"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class EmitPolicy:
    """Emit when the count moved by more than ``tolerance`` (relative) since the last emitted
    value; drop items below ``floor`` (after emitting 0 if a value was emitted before)."""

    half_life_s: float = 7 * DAY_S
    tolerance: float = 0.05
    floor: float = 0.01

    def decide(self, value: float, emitted: float) -> Action:
        if value < self.floor:
            return Action.DROP
        if emitted < 0 or abs(value - emitted) > self.tolerance * emitted:
            return Action.EMIT
        return Action.KEEP

    def next_check_ms(self, value: float, emitted: float, now_ms: int) -> int:
        """When decay alone takes ``value`` out of the band around ``emitted`` (or below the
        floor); without new events nothing changes before."""
        target = max((1.0 - self.tolerance) * emitted, self.floor)
        if value <= target:
            return now_ms
        return now_ms + math.ceil(self.half_life_s * 1000.0 * math.log2(value / target))


# -- the item agent's and the timer's logic ---------------------------------------------------


class PopularityProcessor(TableOwner):
    """Applies contribution records to the item table and emits changed popularity (faust-free)."""

    def __init__(
        self,
        *,
        store: StateStore,
        sink: Sink,
        partitions: int,
        partition_of: Callable[[bytes, int], int],
        topic: str,
        policy: EmitPolicy,
        stats: StreamStats,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(store, sink)
        self.store: StateStore = store
        self.sink: Sink = sink
        self.partitions = partitions
        self.partition_of = partition_of
        self.topic = topic
        self.policy = policy
        self.stats = stats
        self.clock = clock
        self._dirty: set[bytes] = set()
        self._heap: list[tuple[int, bytes]] = []
        self._scheduled: dict[bytes, int] = {}

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _load(self, key: bytes) -> ItemState:
        raw = self.store.get(key)
        return ItemState() if raw is None else ItemState.from_bytes(raw)

    async def apply(self, records: Sequence[Record]) -> None:
        """The item agent: fold a batch of contribution records into the table."""
        async with self.lock:
            h = self.policy.half_life_s
            touched: dict[bytes, ItemState] = {}
            for rec in records:
                try:
                    entries = decode_contributions(rec.value)
                except InvalidRecord as exc:
                    self.stats.popularity_invalid += 1
                    log.error("skipping item record %s/%d: %s", rec.partition, rec.offset, exc)
                    continue
                self.stats.popularity_records += 1
                for item_id, mass, ref_ms in entries:
                    key = item_id.encode()
                    if self.partition_of(key, self.partitions) != rec.partition:
                        self.stats.popularity_invalid += 1  # another partition count upstream
                        continue
                    state = touched.get(key)
                    if state is None:
                        state = self._load(key)
                    if rec.offset <= state.offset:
                        self.stats.popularity_replays += 1
                        continue
                    count = state.count(h).update(mass, ref_ms)
                    state.mass, state.ref_ms, state.offset = count.mass, count.ref_ms, rec.offset
                    touched[key] = state
            for key, state in touched.items():
                self.store.set(key, state.to_bytes())
                self._dirty.add(key)
            await self.store.write_back()

    async def emit_due(self, limit: int | None = None) -> int:
        """The timer: emit items that moved out of tolerance (at most ``limit``); return how many
        records went out."""
        if not self._dirty and (not self._heap or self._heap[0][0] > self._now_ms()):
            return 0
        async with self.lock:
            now = self._now_ms()
            keys = self._take(now, limit)
            sends: list[tuple[bytes, ItemState, float]] = []
            drops: list[bytes] = []
            for key in keys:
                if self.partition_of(key, self.partitions) not in self.active:
                    continue
                raw = self.store.get(key)
                if raw is None:
                    continue
                state = ItemState.from_bytes(raw)
                value = state.count(self.policy.half_life_s).get(now)
                action = self.policy.decide(value, state.emitted)
                if action is Action.EMIT:
                    sends.append((key, state, value))
                elif action is Action.DROP:
                    drops.append(key)
                    if state.emitted > 0:
                        sends.append((key, state, 0.0))
                else:
                    self._schedule(key, self.policy.next_check_ms(value, state.emitted, now))
            deliveries: list[Awaitable[Any]] = []
            for key, _state, value in sends:
                update = PopularityUpdate(key.decode(), value, now, self.policy.half_life_s)
                deliveries.append(await self.sink.send(self.topic, key, update.to_json()))
            await asyncio.gather(*deliveries)
            self.stats.popularity_updates += len(sends)
            for key, state, value in sends:
                if value > 0:
                    state.emitted = value
                    # Lazy: if lost, a restart re-emits the value (harmless).
                    self.store.set_lazy(key, state.to_bytes())
                    self._schedule(key, self.policy.next_check_ms(value, value, now))
            for key in drops:
                self.store.delete(key)
                self._scheduled.pop(key, None)
            if drops:
                await self.store.write_back()
            return len(sends)

    def _take(self, now: int, limit: int | None) -> list[bytes]:
        """Dirty items first, then those whose decay check is due; at most ``limit``."""
        taken: list[bytes] = []
        while self._dirty and (limit is None or len(taken) < limit):
            taken.append(self._dirty.pop())
        while self._heap and self._heap[0][0] <= now and (limit is None or len(taken) < limit):
            when, key = heapq.heappop(self._heap)
            if self._scheduled.get(key) == when:
                del self._scheduled[key]
                taken.append(key)
        return taken

    def _schedule(self, key: bytes, due_ms: int) -> None:
        self._scheduled[key] = due_ms
        heapq.heappush(self._heap, (due_ms, key))
        if len(self._heap) > 4 * len(self._scheduled) + 1024:  # drop superseded entries
            self._heap = [(w, k) for w, k in self._heap if self._scheduled.get(k) == w]
            heapq.heapify(self._heap)

    def on_assigned(self, partitions: Iterable[int]) -> None:
        """After recovery: own ``partitions``; every item there is checked at the next tick."""
        self.active = set(partitions)
        self._heap.clear()
        self._scheduled.clear()
        self._dirty = {
            key
            for key, _raw in self.store.items(self.active)
            if self.partition_of(key, self.partitions) in self.active
        }

    def _forget_owned(self) -> None:
        self._dirty.clear()
