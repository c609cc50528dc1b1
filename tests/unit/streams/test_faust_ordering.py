"""The gapless consumer (streams.faust_ordering) on faust's real consumer class; only the driver
calls below it (the fetch, the seek in the consumer's thread) are replaced."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from aiokafka.errors import IllegalStateError
from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP

from streams.faust_ordering import GaplessConsumer
from streams.settings import KafkaSettings
from streams.stream_app import StreamWorker
from streams.stream_settings import StreamSettings

EVENTS = TP("interest.events", 0)


class _Message:
    def __init__(self, offset: int) -> None:
        self.offset = offset


class _Driver:
    """Fetches to hand out, and the seeks asked of the consumer's thread."""

    def __init__(self, fetches: list[list[int]], seek_error: Exception | None = None) -> None:
        self.fetches = fetches
        self.seeks: list[dict[TP, int]] = []
        self.seek_error = seek_error

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:  # noqa: ASYNC109
        for offset in self.fetches.pop(0):
            yield EVENTS, _Message(offset)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        self.seeks.append(dict(partitions))
        if self.seek_error is not None:
            raise self.seek_error


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


def _install(monkeypatch: pytest.MonkeyPatch, driver: _Driver) -> None:
    monkeypatch.setattr(Consumer, "getmany", driver.getmany)
    monkeypatch.setattr(Consumer, "seek_wait", driver.seek_wait)


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
    """An exception in faust's fetch loop stops all fetching for good: a seek that fails because
    the partition was revoked meanwhile is logged, and the partition's stale records stay out."""
    driver = _Driver([[5, 9, 10]], seek_error=IllegalStateError("not assigned"))
    _install(monkeypatch, driver)
    consumer.order.seek(EVENTS, 5)
    assert _fetch(consumer) == [5]
    assert driver.seeks == [{EVENTS: 6}]
    assert consumer.order.expected(EVENTS) == 6
