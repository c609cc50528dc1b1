"""Dead letters as a metric: ``interest_dead_letters_total{stage, reason}`` from the DLQ topic.

Every component that rejects input -- ``publish`` (a CLI run nobody scrapes), the stream worker,
the embed worker -- writes a dead letter with its stage and reason in headers
(:mod:`streams.contracts.dlq`). Counting them where they are written would leave the one-shot
``publish`` out of Prometheus; counting them from the topic puts them all in one place: the
stream worker's ``/metrics`` reads the topic's new records at each scrape (headers only matter)
and adds them up by stage and reason. It reads from the topic's start when the worker starts, so
the counter is the topic's content within retention, and grows as dead letters arrive.

Like :class:`streams.lag.LagCollector`: refreshed asynchronously before a scrape renders, bounded
by ``max_records`` per refresh (a large backlog is read over several scrapes), never raising for
broker trouble (the counts stay as they were).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from streams.contracts.dlq import DeadLetter
from streams.dlq_cli import DeadLetterReader
from streams.lag import READ_ERRORS
from streams.settings import KafkaSettings

log = logging.getLogger(__name__)

METRIC = "interest_dead_letters"


class DeadLetterCounter(Collector):
    """Counts the records of the DLQ topic by ``(stage, reason)``; see the module docstring.
    Reads with the ``dlq`` command's reader (:class:`streams.dlq_cli.DeadLetterReader`)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        topic: str,
        *,
        registry: CollectorRegistry | None = None,
        max_records: int = 50_000,
    ) -> None:
        self.kafka = kafka
        self.topic = topic
        self.max_records = max_records
        self.counts: Counter[tuple[str, str]] = Counter()
        self._reader: DeadLetterReader | None = None
        self._lock = asyncio.Lock()
        if registry is not None:
            registry.register(self)

    async def refresh(self) -> None:
        """Count the dead letters written since the last refresh (about ``max_records`` at
        most: a large backlog is counted over several scrapes)."""
        async with self._lock:
            try:
                if self._reader is None:
                    self._reader = await DeadLetterReader(self.kafka, self.topic).__aenter__()
                for record in await self._reader.new_records(self.max_records):
                    letter = DeadLetter.from_record(record.key, record.value, record.headers)
                    self.counts[letter.stage or "unknown", letter.reason] += 1
            except READ_ERRORS as exc:
                log.warning("dead-letter count failed: %s", exc or type(exc).__name__)
                await self.close()  # reconnect on the next scrape

    async def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(*READ_ERRORS):
                await reader.__aexit__(None, None, None)

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(METRIC, _HELP, labels=("stage", "reason"))

    def collect(self) -> Iterator[Metric]:
        family = CounterMetricFamily(METRIC, _HELP, labels=("stage", "reason"))
        for (stage, reason), n in sorted(self.counts.items()):
            family.add_metric([stage, reason], n)
        yield family


_HELP = "Dead letters on the DLQ topic by the stage that rejected them and the reason"
