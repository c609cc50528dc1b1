"""The stream worker's shared types: what one consumed record is, where records go (``Sink``),
which topics the worker uses, how a key maps to a partition, and the worker's counters. Pure;
imported by the processors (user state, popularity) and the faust adapter alike, so none of
them has to import another for its types."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from aiokafka.partitioner import murmur2

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names the processor uses (from TopicSettings and StreamSettings)."""

    events: str = "interest.events"
    updates: str = "interest.updates"
    dlq: str = "interest.events.dlq"
    repartition: str = "interest.events.repartition"
    #: Where the per-batch item counts go (streams.stream.popularity); "" = popularity off.
    items: str = ""
    #: The popularity topic the item table's changes are emitted to.
    popularity: str = "interest.items.popularity"


@dataclass(frozen=True, slots=True)
class Record:
    """What the processor needs of one consumed Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: The record's Kafka timestamp (epoch ms; None: unknown, taken as "now").
    timestamp_ms: int | None = None
    #: The record's headers (a control record, streams.contracts.control, is told by one).
    headers: Headers | None = None


@lru_cache(maxsize=65536)
def _murmur(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (Java client, aiokafka): murmur2(key) mod partitions."""
    return _murmur(key) % partitions


class Sink(Protocol):
    """Where the processor produces to (the faust producer in the worker, a fake in tests)."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        """Queue a record; the returned awaitable resolves when it is delivered."""
        ...

    async def barrier(self) -> None:
        """Return when everything sent so far, table changelog writes included, is delivered."""
        ...


@dataclass
class StreamStats:
    """Counters of one worker (exported as metrics by the caller)."""

    records: int = 0
    events: int = 0
    duplicates: int = 0
    replays: int = 0
    forwarded: int = 0
    folded: int = 0
    #: Idle users' states shrunk to numbering and offsets (StreamProcessor.compact_idle).
    compacted: int = 0
    #: Users forgotten on request (streams.contracts.control).
    deletes: int = 0
    batches: int = 0
    jobs: int = 0
    job_events: int = 0
    dlq: Counter[str] = field(default_factory=Counter)
    flushes: Counter[str] = field(default_factory=Counter)
    # Item popularity (streams.stream.popularity).
    item_interactions: int = 0
    popularity_records: int = 0
    popularity_replays: int = 0
    popularity_invalid: int = 0
    popularity_updates: int = 0
