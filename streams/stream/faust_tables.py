"""The faust side of the stream worker's state: its tables, their changelog writes, its producer.

:mod:`streams.stream.processor` and :mod:`streams.stream.popularity` see a
:class:`~streams.stream.table_owner.StateStore` and a :class:`~streams.stream.types.Sink`;
these are
the faust-backed ones (:mod:`streams.stream.app` builds them). Why the worker writes a table's
store and its changelog itself instead of ``table[key] = value``: (b) in
:mod:`streams.stream.app`'s docstring.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Awaitable, Iterator
from typing import Any

from streams.stream.types import Headers, Sink, partition_for


def state_table(app: Any, partitions: int, name: str, help: str) -> Any:
    """A state table (key bytes -> value bytes in partition ``murmur2(key) % N``), written from
    an agent and the timer (see (b) above): ``user-state`` (key user_id, streams.stream.userstate)
    and
    ``item-popularity`` (key item_id, streams.stream.popularity)."""
    import faust

    class StateTable(faust.Table[bytes, bytes]):
        def partition_for_key(self, key: Any) -> int:
            return partition_for(bytes(key), partitions)

    table = StateTable(
        app,
        name=name,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        beacon=app.tables.beacon,
        help=help,
        # A restart reads the whole changelog (about 7k records/s here): let compaction, which
        # never touches the active segment, start early so the log stays ~1 record per user.
        extra_topic_configs={
            "segment.bytes": str(16 * 2**20),
            "segment.ms": str(10 * 60 * 1000),
            "min.cleanable.dirty.ratio": "0.2",
        },
    )
    return app.tables.add(table)


class TableStore:
    """The faust table's local store, with its changelog records sent straight to the producer.

    ``table[key] = value`` would go through faust's send_soon buffer and a background task,
    one awaited publish per write (``Table.on_key_set`` -> ``send_changelog``); this writes the
    same record (same topic, key, value, partition) in a tight loop instead. Nothing else of
    ``on_key_set`` applies to this table (no windows/TTL).
    """

    def __init__(self, table: Any, sink: Sink, partitions: int) -> None:
        self.table = table
        self.sink = sink
        self.partitions = partitions
        self._unsent: dict[bytes, bytes | None] = {}  # None: a tombstone
        self._lazy: dict[bytes, tuple[bytes, float]] = {}  # oldest first

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.data.get(key)
        return value

    def set(self, key: bytes, value: bytes) -> None:
        self.table.data[key] = value
        self._unsent[key] = value  # only the latest value of a key needs to go out
        self._lazy.pop(key, None)

    def set_lazy(self, key: bytes, value: bytes) -> None:
        self.table.data[key] = value
        self._lazy.pop(key, None)
        self._lazy[key] = (value, time.monotonic())

    def delete(self, key: bytes) -> None:
        self.table.data.pop(key, None)
        self._unsent[key] = None
        self._lazy.pop(key, None)

    def lazy_due(self, max_age_s: float) -> bool:
        first = next(iter(self._lazy.values()), None)
        return first is not None and time.monotonic() - first[1] >= max_age_s

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        yield from list(self.table.data.items())

    async def write_back_lazy(self, max_age_s: float = 0.0, limit: int | None = None) -> None:
        cutoff = time.monotonic() - max_age_s
        taken = []
        for key, (value, since) in itertools.islice(self._lazy.items(), limit):
            if since > cutoff:
                break
            taken.append((key, value))
        for key, value in taken:
            self._unsent[key] = value
            del self._lazy[key]
        await self.write_back()

    async def write_back(self) -> None:
        unsent, self._unsent = self._unsent, {}
        topic = self.table.changelog_topic.get_topic_name()
        for key, value in unsent.items():
            await self.sink.send(topic, key, value, partition=partition_for(key, self.partitions))


class ProducerSink:
    """The :class:`~streams.stream.types.Sink` of a faust app: its producer."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        fut: Awaitable[Any] = await self.app.producer.send(
            topic, key, value, partition=partition, timestamp=None, headers=headers
        )
        return fut

    async def barrier(self) -> None:
        await self.app.producer.flush()
