"""The gapless consumer (streams.stream.faust_ordering) on faust's real consumer class; only the
driver
calls below it (the fetch, the seek in the consumer's thread) are replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError
from faust.transport.consumer import ThreadDelegateConsumer
from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP

from streams.settings import KafkaSettings
from streams.stream.app import StreamWorker
from streams.stream.faust_ordering import STALL_AFTER_S, GaplessConsumer
from streams.stream.settings import StreamSettings

EVENTS = TP("interest.events", 0)


class _Message:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _Driver:
    """Fetches to hand out, the seeks asked of the consumer's thread, and its fetch position
    (one past the last record it handed out, or where it was sought to)."""

    def __init__(self, fetches: list[list[int]], seek_error: Exception | None = None) -> None:
        self.fetches = fetches
        self.seeks: list[dict[TP, int]] = []
        self.seek_error = seek_error
        self.position: int | None = None

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        fetch = self.fetches.pop(0)
        if fetch:  # the driver's position moves past a whole fetch before it is handed out
            self.position = fetch[-1] + 1
        for offset in fetch:
            yield EVENTS, _Message(offset)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        self.seeks.append(dict(partitions))
        if self.seek_error is not None:
            raise self.seek_error
        self.position = partitions.get(EVENTS, self.position)

    def fetch_positions(self) -> dict[TP, int]:
        return {} if self.position is None else {EVENTS: self.position}


@pytest.fixture
def consumer(tmp_path: Path) -> GaplessConsumer:
    worker = StreamWorker(
        StreamSettings(app_id="test-ordering", data_dir=tmp_path),
        kafka=KafkaSettings(bootstrap="127.0.0.1:1"),
        partitions=1,
    )
    c = worker.app.consumer
    assert isinstance(c, GaplessConsumer)
    return c


def _fetch(consumer: GaplessConsumer) -> list[int]:
    async def run() -> list[int]:
        return [m.offset async for _tp, m in consumer.getmany(timeout=0.1)]

    return asyncio.run(run())


def _install(monkeypatch: pytest.MonkeyPatch, driver: _Driver, log_end: int = 0) -> None:
    """The driver below faust's consumer: EVENTS assigned, its log ending at ``log_end``."""
    monkeypatch.setattr(Consumer, "getmany", driver.getmany)
    monkeypatch.setattr(Consumer, "seek_wait", driver.seek_wait)
    monkeypatch.setattr(GaplessConsumer, "fetch_positions", lambda self: driver.fetch_positions())
    monkeypatch.setattr(Consumer, "assignment", lambda self: {EVENTS})
    monkeypatch.setattr(Consumer, "highwater", lambda self, tp: log_end)


def test_a_stale_fetch_is_dropped_and_read_again_from_the_expected_offset(
    consumer: GaplessConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver = _Driver([[10, 11, 40, 41], [12, 13], [20]])
    _install(monkeypatch, driver)
    consumer.order.seek(EVENTS, 10)  # recovery sought the partition to its committed offset
    assert _fetch(consumer) == [10, 11]  # 40.. is past 12: not handed on
    assert driver.seeks == [{EVENTS: 12}]
    assert _fetch(consumer) == [12, 13]
    # A jump that is still there right after a re-read is accepted (no records in between) ...
    assert _fetch(consumer) == []
    driver.fetches.append([20, 21])
    assert _fetch(consumer) == [20, 21]
    assert consumer.order.gaps == 1


def test_a_rebalance_interrupting_the_seek_does_not_stop_fetching(
    consumer: GaplessConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception in faust's fetch loop crashes the worker: a seek that fails because
    the partition was revoked meanwhile is logged, and the partition's stale records stay out."""
    driver = _Driver([[5, 9, 10]], seek_error=IllegalStateError("not assigned"))
    _install(monkeypatch, driver)
    consumer.order.seek(EVENTS, 5)
    assert _fetch(consumer) == [5]
    assert driver.seeks == [{EVENTS: 6}]
    assert consumer.order.expected(EVENTS) == 6


class _Ticking:
    """A clock that is one second later every time it is read."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_records_fetched_but_never_handed_on_are_read_again_at_the_next_fetch(
    consumer: GaplessConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the CI failure and the rebalance test showed: the driver's position at the end of
    the partition, the records in between never reached this consumer (and no later record
    came to show the jump). The next fetch starts with a seek back to the expected offset."""
    driver = _Driver([[10, 11], [12, 13]])
    _install(monkeypatch, driver)
    consumer.clock = _Ticking()  # a second per fetch: the check runs once a second
    consumer.order.seek(EVENTS, 10)
    assert _fetch(consumer) == [10, 11]
    driver.position = 40  # 12..39 fetched and lost on the way (e.g. a cancelled fetch)
    assert _fetch(consumer) == [12, 13]
    assert driver.seeks == [{EVENTS: 12}]
    assert consumer.repairs()["refetch"] == 1


def test_a_position_that_moves_past_again_after_the_re_read_is_a_real_gap(
    consumer: GaplessConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offsets without records (transaction markers at the end of a partition): one re-read,
    then the jump is accepted instead of seeking back forever."""
    driver = _Driver([[10], [], [], [15, 16]])
    _install(monkeypatch, driver)
    consumer.clock = _Ticking()
    consumer.order.seek(EVENTS, 10)
    assert _fetch(consumer) == [10]
    driver.position = 15  # 11..14: no records
    assert _fetch(consumer) == []
    assert driver.seeks == [{EVENTS: 11}]
    driver.position = 15  # the re-read skipped them again
    assert _fetch(consumer) == []
    assert driver.seeks == [{EVENTS: 11}]  # not sought back a second time
    assert consumer.order.expected(EVENTS) == 15
    assert _fetch(consumer) == [15, 16]
    assert consumer.repairs() == {"refetch": 1, "gap": 1, "stall": 0}


def test_a_fetch_faust_cancels_takes_nothing_resumed_afterwards(
    consumer: GaplessConsumer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The consumer's thread keeps waiting on a fetch that faust cancelled at a rebalance; what
    it may still take is decided by the set it was given, which must end up matching nothing
    (and not be empty: aiokafka reads that as every partition)."""
    given: list[set[TP]] = []

    async def fetch_in_thread(self: Any, active: set[TP], timeout: float) -> Any:  # noqa: ASYNC109
        given.append(active)
        await asyncio.sleep(10)  # the thread waits for records

    monkeypatch.setattr(ThreadDelegateConsumer, "_getmany", fetch_in_thread)
    live = {EVENTS}

    async def run() -> None:
        fetch = asyncio.ensure_future(consumer._getmany(live, timeout=1.0))
        await asyncio.sleep(0.01)
        fetch.cancel()  # a rebalance stops faust's fetch loop
        with pytest.raises(asyncio.CancelledError):
            await fetch

    asyncio.run(run())
    (held,) = given
    assert held is not live  # faust's live set changes as it resumes partitions
    live.add(TP("interest.events-changelog", 0))  # e.g. a recovery resuming a changelog
    assert held and not held & (live | {EVENTS})


def test_the_installed_aiokafka_keeps_fetch_positions_where_the_consumer_reads_them() -> None:
    """GaplessConsumer.fetch_positions reads aiokafka's subscription state (there is no
    synchronous API for it): an aiokafka upgrade that moves it must fail here."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run() -> None:
        driver = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
        tp = TopicPartition("interest.events", 0)
        driver.assign([tp])  # no broker needed
        state = driver._subscription.subscription.assignment.state_value(tp)
        assert not state.has_valid_position
        driver._subscription.seek(tp, 42)  # what the fetcher does for a seek
        assert (state.has_valid_position, state.position) == (True, 42)
        await driver.stop()

    asyncio.run(run())


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def stalled_setup(
    consumer: GaplessConsumer, monkeypatch: pytest.MonkeyPatch
) -> tuple[GaplessConsumer, _Driver, _Clock]:
    """EVENTS assigned, sought to 10, records up to offset 99 in the log, 10 and 11 read."""
    driver = _Driver([[10, 11]])
    _install(monkeypatch, driver, log_end=100)
    clock = _Clock()
    consumer.clock = clock
    consumer.order.seek(EVENTS, 10)
    assert _fetch(consumer) == [10, 11]
    return consumer, driver, clock


def test_a_partition_left_out_of_the_fetch_is_put_back_and_read_again(
    stalled_setup: tuple[GaplessConsumer, _Driver, _Clock],
) -> None:
    """The state seen once in CI (repair 3): faust no longer fetches a partition whose records
    wait. After STALL_AFTER_S it is back in faust's active set and sought to the next offset."""
    consumer, driver, clock = stalled_setup
    consumer._get_active_partitions().discard(EVENTS)
    consumer._buffered_partitions.add(EVENTS)
    for _ in range(int(STALL_AFTER_S) - 1):
        clock.now += 1
        driver.fetches.append([])
        _fetch(consumer)
    assert driver.seeks == []
    clock.now += 1.5
    driver.fetches.append([12, 13])
    assert _fetch(consumer) == [12, 13]
    assert driver.seeks == [{EVENTS: 12}]
    assert EVENTS in consumer._get_active_partitions()
    assert EVENTS not in consumer._buffered_partitions
    assert consumer.repairs() == {"refetch": 0, "gap": 0, "stall": 1}


def test_a_partition_paused_by_faust_or_without_records_waiting_is_left_alone(
    stalled_setup: tuple[GaplessConsumer, _Driver, _Clock], monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer, driver, clock = stalled_setup
    consumer.pause_partitions({EVENTS})  # e.g. a recovery reading the changelogs
    for _ in range(3 * int(STALL_AFTER_S)):
        clock.now += 1
        driver.fetches.append([])
        _fetch(consumer)
    consumer.resume_partitions({EVENTS})
    monkeypatch.setattr(Consumer, "highwater", lambda self, tp: 12)  # 10 and 11 read: no lag
    for _ in range(3 * int(STALL_AFTER_S)):
        clock.now += 1
        driver.fetches.append([])
        _fetch(consumer)
    assert driver.seeks == []
    assert consumer.watch.stalls == 0
