"""Dead letters as a metric: ``interest_dead_letters_total{stage, reason}`` from the DLQ topic.

Every component that rejects input -- ``publish`` (a CLI run nobody scrapes), the stream worker,
the embed worker -- writes a dead letter with its stage and reason in headers
(:mod:`streams.contracts.dlq`). Counting them where they are written would leave the one-shot
``publish`` out of Prometheus; counting them from the topic puts them all in one place: the
stream worker's ``/metrics`` reads the topic's new records at each scrape (headers only matter)
and adds them up by stage and reason. It reads from the topic's start when the worker starts, so
the counter is the topic's content within retention, and grows as dead letters arrive.

Like :class:`streams.lag.LagCollector`: refreshed asynchronously before a scrape renders, bounded
by ``max_records`` and ``timeout_s`` per refresh (a large backlog is read over several scrapes),
never raising for broker trouble (the counts stay as they were).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from streams.contracts.dlq import REASON, STAGE
from streams.lag import READ_ERRORS
from streams.settings import KafkaSettings

log = logging.getLogger(__name__)

METRIC = "interest_dead_letters"


class DeadLetterCounter(Collector):
    """Counts the records of the DLQ topic by ``(stage, reason)``; see the module docstring."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        registry: CollectorRegistry | None = None,
        max_records: int = 50_000,
        timeout_s: float = 5.0,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.max_records = max_records
        self.timeout_s = timeout_s
        self.counts: Counter[tuple[str, str]] = Counter()
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        if registry is not None:
            registry.register(self)

    async def refresh(self) -> None:
        """Count the dead letters written since the last refresh (at most ``max_records``)."""
        async with self._lock:
            try:
                await asyncio.wait_for(self._read_new(), self.timeout_s)
            except TimeoutError:
                pass  # what was read is counted; the rest at the next scrape
            except READ_ERRORS as exc:
                log.warning("dead-letter count failed: %s", exc or type(exc).__name__)
                await self.close()  # reconnect on the next scrape

    async def _read_new(self) -> None:
        """Read up to the end offsets the topic has now (at most ``max_records``)."""
        consumer = await self._connected()
        if consumer is None:
            return  # no DLQ topic yet: nothing was dead-lettered
        ends = await consumer.end_offsets(list(consumer.assignment()))
        read = 0
        while read < self.max_records and await _behind(consumer, ends):
            batches = await consumer.getmany(timeout_ms=200, max_records=5_000)
            for records in batches.values():
                for record in records:
                    self.counts[_labels(record.headers)] += 1
                read += len(records)

    async def _connected(self) -> AIOKafkaConsumer | None:
        """The topic's reader (every partition from its start); None while the topic does not
        exist (the workers create it at start)."""
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                **self.kafka.client_kwargs(),
                group_id=None,  # every partition, nothing committed
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            await consumer.start()
            if self.topic not in await consumer.topics():
                await consumer.stop()
                return None
            consumer.subscribe([self.topic])
            self._consumer = consumer
        for _ in range(20):  # the assignment follows the subscription's metadata update
            if self._consumer.assignment():
                return self._consumer
            await asyncio.sleep(0.05)
        return None

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            with contextlib.suppress(*READ_ERRORS):
                await consumer.stop()

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(METRIC, _HELP, labels=("stage", "reason"))

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(METRIC, _HELP, labels=("stage", "reason"))
        for (stage, reason), n in sorted(self.counts.items()):
            family.add_metric([stage, reason], n)
        yield family


_HELP = "Dead letters on the DLQ topic by the stage that rejected them and the reason"


async def _behind(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
    """Whether some partition's position is before the end offset it had at the start."""
    for tp, end in ends.items():
        if await consumer.position(tp) < end:
            return True
    return False


def _labels(headers: Any) -> tuple[str, str]:
    """``(stage, reason)`` of a dead letter's headers ("unknown" where one is missing)."""
    found = {k: v for k, v in headers or () if k in (STAGE, REASON)}
    stage = found.get(STAGE, b"unknown").decode(errors="replace") or "unknown"
    reason = found.get(REASON, b"unknown").decode(errors="replace") or "unknown"
    return stage, reason
