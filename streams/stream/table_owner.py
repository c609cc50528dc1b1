"""What the stream worker's two processors share: owning some partitions of a state table.

:class:`~streams.stream.processor.StreamProcessor` (per-user state) and
:class:`~streams.stream.popularity.PopularityProcessor` (per-item counts) each keep a faust table
whose
changelog writes are partly lazy (written back within ``persist_interval_s``), serialise their
work under one lock, and must make every write durable before faust hands their partitions to
another worker. That lifecycle lives here once; each processor says what it caches per owned key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Iterable
from typing import Protocol


class LazyWrites(Protocol):
    """The part of a state table's store that the lifecycle needs (streams.stream.faust_tables'
    ``TableStore``)."""

    def lazy_due(self, max_age_s: float) -> bool:
        """Whether a lazy write is waiting for at least ``max_age_s``."""
        ...

    async def write_back_lazy(self, max_age_s: float = 0.0, limit: int | None = None) -> None:
        """Hand the lazy writes waiting >= ``max_age_s`` (oldest first, at most ``limit``) and
        all eager ones to the producer."""
        ...

    def settle(self) -> None:
        """Move what the changelog has delivered into the local store now."""
        ...


class StateStore(LazyWrites, Protocol):
    """A state table, as streams.stream.faust_tables.TableStore offers it: the per-user state
    (key = user_id, value = ``UserState.to_bytes()``) or the item counts (key = item_id, value =
    ``ItemState.to_bytes()``)."""

    def get(self, key: bytes) -> bytes | None: ...

    def set(self, key: bytes, value: bytes) -> None:
        """Store locally now; the changelog record goes out at the next :meth:`write_back`."""
        ...

    def set_lazy(self, key: bytes, value: bytes) -> None:
        """Store locally now; the changelog record waits for :meth:`write_back_lazy` unless a
        :meth:`set` of the same key comes first (for writes whose loss a restart tolerates)."""
        ...

    def delete(self, key: bytes) -> None:
        """Drop locally now; a tombstone goes out at the next :meth:`write_back`."""
        ...

    def items(self, partitions: Collection[int] | None = None) -> Iterable[tuple[bytes, bytes]]:
        """Every entry of ``partitions`` (default: all)."""
        ...

    async def write_back(self) -> None:
        """Hand the changelog records of all :meth:`set` writes to the producer (not awaited)."""
        ...

    def scan(self, partition: int, after: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` entries of ``partition`` with keys after ``after``, in key order."""
        ...


class Barrier(Protocol):
    async def barrier(self) -> None:
        """Return when everything sent so far, table changelog writes included, is delivered."""
        ...


class TableOwner:
    """Owns ``active`` partitions of a table; ``lock`` serialises the agent, the timer and a
    revocation."""

    def __init__(self, store: LazyWrites, sink: Barrier) -> None:
        self.store = store
        self.sink = sink
        #: Serialises batches, timer work and revocation: no interleaved read-modify-write.
        self.lock = asyncio.Lock()
        #: Partitions of the table this worker owns (set after each recovery).
        self.active: set[int] = set()

    async def persist(self, max_age_s: float = 0.0, limit: int | None = None) -> None:
        """Send lazy writes older than ``max_age_s`` (the timer: a bounded chunk per tick, so
        the agent never waits long) -- or all of them (shutdown)."""
        if not self.store.lazy_due(max_age_s):
            return
        async with self.lock:
            await self.store.write_back_lazy(max_age_s, limit)

    async def on_revoked(self) -> None:
        """Before handing partitions over: finish under the lock, make every write durable."""
        async with self.lock:
            self.active = set()
            self._forget_owned()
            await self.store.write_back_lazy()
            await self.sink.barrier()
            self.store.settle()  # the local store has it all before faust takes the partitions

    def _forget_owned(self) -> None:
        """Drop what is cached about the owned keys (the partitions are going away)."""
