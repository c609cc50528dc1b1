"""The stream worker's table stores: RocksDB (the default) written behind its changelog."""

from __future__ import annotations

import asyncio
import gc
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from faust.types import TP

from streams.contracts.events import Event
from streams.settings import KafkaSettings
from streams.stream.app import StreamWorker
from streams.stream.settings import StreamSettings
from streams.stream.types import partition_for
from streams.stream.userstate import UserState

PARTITIONS = 2


class HeldSink:
    """A producer whose deliveries the test completes (or fails) by hand."""

    def __init__(self) -> None:
        self.sent: dict[tuple[bytes | None, bytes | None], asyncio.Future[Any]] = {}

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.sent[key, value] = fut
        return fut

    async def barrier(self) -> None:
        pass


async def settle() -> None:
    """Let the delivery callbacks run and their batch reach the local store."""
    for _ in range(3):
        await asyncio.sleep(0)


def worker_at(path: Path, sink: HeldSink) -> StreamWorker:
    settings = StreamSettings(app_id="test-tables", data_dir=path)
    kafka = KafkaSettings(bootstrap="127.0.0.1:1")
    return StreamWorker(settings, kafka=kafka, partitions=PARTITIONS, sink=sink)


def test_rocksdb_store_holds_only_what_the_changelog_has(tmp_path: Path) -> None:
    write_some_deliver_some(tmp_path)
    gc.collect()  # the first worker's databases closed, as after a kill -9
    # A worker on the same data dir finds what was delivered, and its offset.
    again = worker_at(tmp_path, HeldSink())
    assert dict(again.processor.store.items()) == {b"u1": b"v2"}
    db = again.table.data._db_for_partition(partition_for(b"u1", PARTITIONS))
    assert db.get(again.table.data.offset_key) == b"9"


def write_some_deliver_some(tmp_path: Path) -> None:
    sink = HeldSink()
    worker = worker_at(tmp_path, sink)
    store, rocks = worker.processor.store, worker.table.data
    changelog = worker.table.changelog_topic.get_topic_name()

    def local(key: bytes) -> bytes | None:
        value: bytes | None = rocks._db_for_partition(partition_for(key, PARTITIONS)).get(key)
        return value

    def offset(key: bytes) -> int | None:
        found: int | None = rocks.persisted_offset(TP(changelog, partition_for(key, PARTITIONS)))
        return found

    async def run() -> None:
        store.set(b"u1", b"v1")
        store.set(b"u2", b"w1")
        await store.write_back()
        # Sent, not delivered: served from memory, not in RocksDB, no offset.
        assert (store.get(b"u1"), local(b"u1"), offset(b"u1")) == (b"v1", None, None)
        sink.sent[b"u1", b"v1"].set_result(SimpleNamespace(offset=7))
        sink.sent[b"u2", b"w1"].set_exception(RuntimeError("broker gone"))
        await settle()
        assert (local(b"u1"), offset(b"u1")) == (b"v1", 7)
        assert (store.get(b"u2"), local(b"u2")) == (b"w1", None)  # failed: never local
        # A newer value set before the older one's delivery stays the one served.
        store.set(b"u1", b"v2")
        await store.write_back()
        store.set_lazy(b"u1", b"v3")
        sink.sent[b"u1", b"v2"].set_result(SimpleNamespace(offset=9))
        await settle()
        assert (store.get(b"u1"), local(b"u1"), offset(b"u1")) == (b"v3", b"v2", 9)
        assert dict(store.items()) == {b"u1": b"v3", b"u2": b"w1"}

    asyncio.run(run())
    rocks._dbs.clear()


def test_scan_walks_a_partition_in_key_order_past_the_offset_record(tmp_path: Path) -> None:
    sink = HeldSink()
    worker = worker_at(tmp_path, sink)
    store = worker.processor.store
    keys = sorted(f"user-{i:03d}".encode() for i in range(40))
    mine = [k for k in keys if partition_for(k, PARTITIONS) == 0]

    async def run() -> None:
        for k in keys:
            store.set(k, b"state")
        await store.write_back()
        for i, fut in enumerate(sink.sent.values()):
            fut.set_result(SimpleNamespace(offset=i))
        await settle()

    asyncio.run(run())
    seen: list[bytes] = []
    after = None
    while chunk := store.scan(0, after, 5):
        seen += [k for k, _ in chunk]
        after = chunk[-1][0]
    assert seen == mine


def test_idle_sweep_judges_the_newest_value_not_the_local_store(tmp_path: Path) -> None:
    """The sweep scans the local store, which trails the changelog writes in flight: a user
    idle there but active in memory must not be compacted back to its old state."""
    sink = HeldSink()
    worker = worker_at(tmp_path, sink)
    processor, store = worker.processor, worker.processor.store
    processor.on_assigned(range(PARTITIONS))
    day = 86_400_000
    limits = worker.settings.state_limits()

    def flushed(last_n: int, at_ms: int) -> bytes:
        state = UserState()
        for n in range(1, last_n + 1):
            event = Event(f"e{n}", "u1", "click", at_ms, 1.0, text="t")
            state.apply(event, seen_ms=at_ms, source=0, offset=n, limits=limits)
        state.mark_flushed(last_n, now_ms=at_ms)
        return state.to_bytes()

    async def run() -> None:
        store.set(b"u1", flushed(2, at_ms=0))  # old, delivered: in RocksDB
        await store.write_back()
        sink.sent[b"u1", store.get(b"u1")].set_result(SimpleNamespace(offset=1))
        await settle()
        newer = flushed(5, at_ms=2 * day)  # written since, still in flight
        store.set_lazy(b"u1", newer)
        processor.clock = lambda: (2 * day + 1000) / 1000
        assert await processor.compact_idle(day, limit=10) == 0
        assert store.get(b"u1") == newer

    asyncio.run(run())
