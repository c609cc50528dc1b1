"""The faust side of the stream worker's state: its tables, their changelog writes, its producer.

:mod:`streams.stream.processor` and :mod:`streams.stream.popularity` see a
:class:`~streams.stream.table_owner.StateStore` and a :class:`~streams.stream.types.Sink`;
these are
the faust-backed ones (:mod:`streams.stream.app` builds them). Why the worker writes a table's
store and its changelog itself instead of ``table[key] = value``: (b) in
:mod:`streams.stream.app`'s docstring.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Awaitable, Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol

from streams.stream.types import Headers, Sink, partition_for

Item = tuple[bytes, bytes]
#: A delivered changelog record: key, value (None: a tombstone), partition, offset.
Landed = tuple[bytes, bytes | None, int, int]


class Backing(Protocol):
    """Where a table's delivered values live on this worker (faust's store for the table)."""

    def get(self, key: bytes, partition: int) -> bytes | None: ...

    def put_many(self, landed: Sequence[Landed]) -> None:
        """Store delivered values (None: delete), in delivery order, each with the offset of its
        changelog record."""
        ...

    def items(self, partitions: Collection[int], partition_of: Any) -> Iterator[Item]: ...

    def scan(
        self, partition: int, after: bytes | None, limit: int, partition_of: Any
    ) -> list[Item]:
        """Up to ``limit`` entries of ``partition`` with keys after ``after``, in key order."""
        ...


def state_table(
    app: Any, partitions: int, name: str, help: str, *, options: Mapping[str, Any]
) -> Any:
    """A state table (key bytes -> value bytes in partition ``murmur2(key) % N``), written from
    an agent and the timer (see (b) above): ``user-state`` (key user_id, streams.stream.userstate)
    and ``item-popularity`` (key item_id, streams.stream.popularity), in the app's store
    (``rocksdb://`` or ``memory://``) with ``options`` (RocksDB's sizes)."""
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
        # faust's RocksDB store pops its own keys from this dict: a copy per table.
        options=dict(options),
        # A start reads the changelog past what the local store holds (all of it with the
        # memory store, about 7k records/s here): let compaction, which never touches the
        # active segment, start early so the log stays ~1 record per key.
        extra_topic_configs={
            "segment.bytes": str(16 * 2**20),
            "segment.ms": str(10 * 60 * 1000),
            "min.cleanable.dirty.ratio": "0.2",
        },
    )
    return app.tables.add(table)


def backing_for(table: Any) -> Backing:
    """The local store of a table made by :func:`state_table`, as a :class:`Backing`."""
    from faust.stores.rocksdb import Store as RocksStore

    if isinstance(table.data, RocksStore):
        return RocksBacking(table.data)
    return MemoryBacking(table.data)


class MemoryBacking:
    """The local copy of a table in faust's memory store: a dict, re-read from the whole
    changelog at every start and every partition handed over."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def get(self, key: bytes, partition: int) -> bytes | None:
        value: bytes | None = self.store.get(key)
        return value

    def put_many(self, landed: Sequence[Landed]) -> None:
        for key, value, _partition, _offset in landed:
            if value is None:
                self.store.pop(key, None)
            else:
                self.store[key] = value

    def items(self, partitions: Collection[int], partition_of: Any) -> Iterator[Item]:
        for key, value in list(self.store.items()):
            if partition_of(key) in partitions:
                yield key, value

    def scan(
        self, partition: int, after: bytes | None, limit: int, partition_of: Any
    ) -> list[Item]:
        # A dict has no key order: sorted per call (O(n log n); the memory store is for small
        # state, RocksDB seeks).
        keys = sorted(
            k
            for k in list(self.store.keys())
            if partition_of(k) == partition and (after is None or k > after)
        )
        return [(k, v) for k in keys[:limit] if (v := self.store.get(k)) is not None]


class RocksBacking:
    """The local copy of a table in faust's RocksDB store (one database per partition under the
    worker's data dir), with the changelog offset it holds: a start or a partition handed over
    reads only the changelog past that offset (faust's recovery does, ``persisted_offset``).

    faust's own writes need the current event's partition (``Store._set``: (b) in
    :mod:`streams.stream.app`), so this writes each partition's database itself
    (``_db_for_partition``, faust-streaming 0.15.3)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def get(self, key: bytes, partition: int) -> bytes | None:
        value: bytes | None = self.store._db_for_partition(partition).get(key)
        return value

    def put_many(self, landed: Sequence[Landed]) -> None:
        from rocksdict import WriteBatch

        batches: dict[int, Any] = {}
        newest: dict[int, int] = {}
        for key, value, partition, offset in landed:
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = WriteBatch(raw_mode=True)
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
            newest[partition] = max(offset, newest.get(partition, offset))
        for partition, batch in batches.items():
            # The values and the offset they reach, atomically: after a kill -9 the database
            # holds a prefix of the changelog and says which.
            batch.put(self.store.offset_key, str(newest[partition]).encode())
            self.store._db_for_partition(partition).write(batch)

    def items(self, partitions: Collection[int], partition_of: Any) -> Iterator[Item]:
        for partition in sorted(partitions):
            yield from self.store._visible_items(self.store._db_for_partition(partition))

    def scan(
        self, partition: int, after: bytes | None, limit: int, partition_of: Any
    ) -> list[Item]:
        out: list[Item] = []
        db = self.store._db_for_partition(partition)
        for key, value in db.items(from_key=after):
            if key == after or key == self.store.offset_key:
                continue
            out.append((key, value))
            if len(out) >= limit:
                break
        return out


class TableStore:
    """A state table's local store, written behind its changelog, with the changelog records
    sent straight to the producer.

    ``table[key] = value`` would go through faust's send_soon buffer and a background task,
    one awaited publish per write (``Table.on_key_set`` -> ``send_changelog``); this writes the
    same record (same topic, key, value, partition) in a tight loop instead. Nothing else of
    ``on_key_set`` applies to this table (no windows/TTL).

    Write-behind: a value goes to the local store (:class:`MemoryBacking` or
    :class:`RocksBacking`) only once its changelog record is delivered, together with that
    record's offset; until then it is served from ``_overlay``. So the local store is always a
    prefix of the changelog -- a kill -9 can lose what was not delivered, exactly as a worker
    recovering from the changelog alone would -- and a restart reads only the changelog past the
    stored offset. This relies on the producer delivering a partition's records in order, which
    aiokafka does (one produce request in flight per broker).
    """

    def __init__(self, table: Any, sink: Sink, partitions: int, backing: Backing) -> None:
        self.table = table
        self.sink = sink
        self.partitions = partitions
        self.backing = backing
        self.topic: str = table.changelog_topic.get_topic_name()
        self._overlay: dict[bytes, bytes | None] = {}  # not yet delivered; None: a tombstone
        #: Delivered, not yet in the local store: written in one batch per event-loop turn.
        self._landed: list[Landed] = []
        self._unsent: dict[bytes, bytes | None] = {}
        self._lazy: dict[bytes, tuple[bytes, float]] = {}  # oldest first

    def _partition(self, key: bytes) -> int:
        return partition_for(key, self.partitions)

    def get(self, key: bytes) -> bytes | None:
        if key in self._overlay:
            return self._overlay[key]
        return self.backing.get(key, self._partition(key))

    def set(self, key: bytes, value: bytes) -> None:
        self._overlay[key] = value
        self._unsent[key] = value  # only the latest value of a key needs to go out
        self._lazy.pop(key, None)

    def set_lazy(self, key: bytes, value: bytes) -> None:
        self._overlay[key] = value
        self._lazy.pop(key, None)
        self._lazy[key] = (value, time.monotonic())

    def delete(self, key: bytes) -> None:
        self._overlay[key] = None
        self._unsent[key] = None
        self._lazy.pop(key, None)

    def lazy_due(self, max_age_s: float) -> bool:
        first = next(iter(self._lazy.values()), None)
        return first is not None and time.monotonic() - first[1] >= max_age_s

    def items(self, partitions: Collection[int] | None = None) -> Iterator[Item]:
        """Every live entry of ``partitions`` (default: all), the undelivered ones included."""
        wanted = range(self.partitions) if partitions is None else partitions
        overlay = self._overlay
        for key, value in self.backing.items(wanted, self._partition):
            if key not in overlay:
                yield key, value
        for key, maybe in list(overlay.items()):
            if maybe is not None and self._partition(key) in wanted:
                yield key, maybe

    def scan(self, partition: int, after: bytes | None, limit: int) -> list[Item]:
        """Up to ``limit`` delivered entries of ``partition`` after key ``after`` (key order),
        for a sweep over the whole table in chunks; undelivered ones are recent, not scanned."""
        return self.backing.scan(partition, after, limit, self._partition)

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
        for key, value in unsent.items():
            partition = self._partition(key)
            delivery = await self.sink.send(self.topic, key, value, partition=partition)
            asyncio.ensure_future(delivery).add_done_callback(
                functools.partial(self._delivered, key, value, partition)
            )

    def _delivered(
        self, key: bytes, value: bytes | None, partition: int, delivery: asyncio.Future[Any]
    ) -> None:
        """A changelog record is delivered: to the local store with the next batch of them (a
        producer response resolves many records in one turn of the event loop)."""
        if delivery.cancelled() or delivery.exception() is not None:
            return  # stays in the overlay; the failed send stops the worker
        if not self._landed:
            asyncio.get_running_loop().call_soon(self.settle)
        self._landed.append((key, value, partition, delivery.result().offset))

    def settle(self) -> None:
        """Move the delivered records into the local store now (scheduled by the first delivery
        of an event-loop turn; a revocation calls it too, before faust takes the partitions)."""
        landed, self._landed = self._landed, []
        if not landed:
            return
        self.backing.put_many(landed)
        overlay, lazy = self._overlay, self._lazy
        for key, value, _partition, _offset in landed:
            if key in overlay and overlay[key] is value and key not in lazy:
                del overlay[key]  # not overwritten meanwhile


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
