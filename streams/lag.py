"""Consumer lag read from the brokers, and a Prometheus collector that serves it.

What is read, per group, the same way Kafka's consumer-groups tool reads it:

- state and members: DescribeGroups (``AIOKafkaAdminClient.describe_consumer_groups``); the
  members' assignments name the partitions a live group owns;
- committed offsets: OffsetFetch for the whole group (``list_consumer_group_offsets``);
- log-end offsets: ListOffsets ``latest`` under ``read_uncommitted`` = the high watermark
  (``AIOKafkaConsumer.end_offsets``), for partitions in the cluster's metadata only (aiokafka
  waits forever on an unknown one);
- lag seconds: the timestamp of the record at the committed offset, fetched by a short-lived
  consumer without a group (see :mod:`streams.lag_rules` for why this and not interpolation).

The rows are those Kafka's tool prints: partitions assigned to a member (with or without a
commit) plus partitions with a committed offset. The math and the status rules live in
:mod:`streams.lag_rules`.

A worker serves lag on its ``/metrics``::

    collector = LagCollector(kafka, [group_id], registry=metrics.registry)
    ...
    await collector.refresh()  # in the async /metrics handler, before rendering
    body = generate_latest(metrics.registry)
    ...
    await collector.close()  # on shutdown
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streams.lag_rules import (
    DEFAULT_WINDOW,
    GroupSample,
    PartitionSample,
    SampleWindow,
    Status,
    Verdict,
    lag_seconds,
    partition_lag,
)
from streams.settings import KafkaSettings
from streams.topics import KafkaUnavailable, refusal, unreachable

log = logging.getLogger(__name__)

#: Errors a lag read can end with while the brokers are away or busy; the collector survives them.
READ_ERRORS: tuple[type[BaseException], ...] = (
    KafkaError,
    KafkaUnavailable,
    OSError,
    TimeoutError,
)


@dataclass(frozen=True)
class _Group:
    """What DescribeGroups says about one group."""

    state: str
    members: int
    assigned: frozenset[TopicPartition]


class LagReader:
    """Reads committed offsets, log-end offsets and membership of consumer groups.

    Holds one admin client between reads (no background fetching); record timestamps come from a
    consumer that lives for one read. Use as ``async with LagReader(kafka) as reader``.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        *,
        record_timeout_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kafka = kafka
        self.record_timeout_s = record_timeout_s
        self.clock = clock
        self._admin: AIOKafkaAdminClient | None = None
        # (topic, partition, offset) -> record timestamp (ms): a record's timestamp never changes.
        self._timestamps: dict[tuple[str, int, int], int] = {}

    async def start(self) -> None:
        if self._admin is not None:
            return
        admin = AIOKafkaAdminClient(**self._client_kwargs())
        try:
            await admin.start()
        except KafkaConnectionError as exc:
            await admin.close()
            raise unreachable(self.kafka, exc, await refusal(self.kafka)) from exc
        self._admin = admin

    async def close(self) -> None:
        if self._admin is not None:
            admin, self._admin = self._admin, None
            await admin.close()

    async def __aenter__(self) -> LagReader:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _client_kwargs(self) -> dict[str, object]:
        kwargs = self.kafka.client_kwargs()
        kwargs["client_id"] = f"{self.kafka.client_id}-lag"
        return kwargs

    async def read(self, groups: Sequence[str]) -> list[GroupSample]:
        """One sample per group, in the order given."""
        await self.start()
        admin = self._admin
        assert admin is not None
        described = await self._describe(admin, groups)
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in groups:
            offsets = await admin.list_consumer_group_offsets(group)
            committed[group] = {tp: om.offset for tp, om in offsets.items() if om.offset >= 0}
        # Kafka's tool's rows: partitions a member owns, plus partitions with a committed offset.
        rows = {g: sorted(set(committed[g]) | described[g].assigned) for g in groups}
        wanted = {tp for tps in rows.values() for tp in tps}
        known = await self._known_partitions(admin, {tp.topic for tp in wanted})
        log_end, timestamps = await self._read_logs(wanted & known, rows, committed)
        now = self.clock()
        samples = []
        for group in groups:
            parts = []
            for tp in rows[group]:
                offset = committed[group].get(tp)
                lag = partition_lag(offset, log_end.get(tp))
                ts = (
                    timestamps.get((tp.topic, tp.partition, offset)) if offset is not None else None
                )
                parts.append(
                    PartitionSample(
                        tp.topic, tp.partition, offset, log_end.get(tp), lag_seconds(lag, ts, now)
                    )
                )
            info = described[group]
            samples.append(GroupSample(group, now, info.state, info.members, tuple(parts)))
        return samples

    async def _read_logs(
        self,
        partitions: set[TopicPartition],
        rows: dict[str, list[TopicPartition]],
        committed: dict[str, dict[TopicPartition, int]],
    ) -> tuple[dict[TopicPartition, int], dict[tuple[str, int, int], int]]:
        """Log-end offsets of ``partitions`` and the timestamps at each lagging committed offset."""
        if not partitions:  # no consumer at all: aiokafka trips over one stopped right away
            return {}, {}
        consumer = AIOKafkaConsumer(
            **self._client_kwargs(),
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_uncommitted",  # high watermark, as Kafka's tool
            auto_offset_reset="earliest",  # committed below log start: the oldest record left
            fetch_max_wait_ms=100,
            max_partition_fetch_bytes=64 * 1024,
        )
        await consumer.start()
        try:
            log_end: dict[TopicPartition, int] = await consumer.end_offsets(sorted(partitions))
            backlog = {
                (tp, committed[g][tp])
                for g, tps in rows.items()
                for tp in tps
                if partition_lag(committed[g].get(tp), log_end.get(tp))
            }
            timestamps = await self._oldest_timestamps(consumer, backlog)
        finally:
            await consumer.stop()
        return log_end, timestamps

    async def _describe(
        self, admin: AIOKafkaAdminClient, groups: Sequence[str]
    ) -> dict[str, _Group]:
        out = {g: _Group("Dead", 0, frozenset()) for g in groups}
        # One group per request: aiokafka 0.14 decodes DescribeGroups v3 answers with the v2
        # schema (no authorized_operations), which misreads every group after the first.
        responses = [r for g in groups for r in await admin.describe_consumer_groups([g])]
        for response in responses:
            for entry in response.groups:
                error_code, group, state, protocol_type, _protocol, members = entry[:6]
                if error_code:
                    raise for_code(error_code)(f"cannot describe consumer group {group}")
                assigned: set[TopicPartition] = set()
                if protocol_type == "consumer":  # faust's groups too; connect/others differ
                    for member in members:
                        assigned.update(_assignment(member[4]))
                out[group] = _Group(state, len(members), frozenset(assigned))
        return out

    async def _known_partitions(
        self, admin: AIOKafkaAdminClient, topics: set[str]
    ) -> set[TopicPartition]:
        """Partitions that exist. All topics are asked for: naming one could auto-create it."""
        if not topics:
            return set()
        known: set[TopicPartition] = set()
        for topic in await admin.describe_topics():
            if topic["topic"] in topics and not topic["error_code"]:
                known.update(
                    TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"]
                )
        return known

    async def _oldest_timestamps(
        self, consumer: AIOKafkaConsumer, wanted: set[tuple[TopicPartition, int]]
    ) -> dict[tuple[str, int, int], int]:
        """Timestamp (ms) of the first record at or after each (partition, committed offset)."""
        keys = {(tp.topic, tp.partition, offset) for tp, offset in wanted}
        self._timestamps = {k: v for k, v in self._timestamps.items() if k in keys}
        missing = sorted(
            (tp, o) for tp, o in wanted if (tp.topic, tp.partition, o) not in self._timestamps
        )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.record_timeout_s
        # Two groups can wait at different offsets of one partition: one offset per round.
        while missing and loop.time() < deadline:
            round_: dict[TopicPartition, int] = {}
            for tp, offset in missing:
                round_.setdefault(tp, offset)
            missing = [(tp, o) for tp, o in missing if round_[tp] != o]
            consumer.assign(list(round_))
            for tp, offset in round_.items():
                consumer.seek(tp, offset)
            pending = set(round_)
            while pending and (left := deadline - loop.time()) > 0:
                batch = await consumer.getmany(
                    *pending, timeout_ms=max(1, int(min(left, 0.5) * 1000))
                )
                for tp, records in batch.items():
                    record = next((r for r in records if r.offset >= round_[tp]), None)
                    if record is not None and tp in pending:
                        self._timestamps[(tp.topic, tp.partition, round_[tp])] = record.timestamp
                        pending.discard(tp)
                        consumer.pause(tp)
            if pending:
                log.debug("no record read in time at %s", sorted(pending))
        return {k: v for k, v in self._timestamps.items() if k in keys}


def _assignment(raw: bytes) -> list[TopicPartition]:
    """Partitions in a member's assignment (empty while the group rebalances)."""
    if not raw:
        return []
    try:
        decoded: ConsumerProtocolMemberAssignment = ConsumerProtocolMemberAssignment.decode(raw)
        partitions: list[TopicPartition] = decoded.partitions()
        return partitions
    except Exception:  # a protocol we do not read: the group still has its committed offsets
        return []


@dataclass(frozen=True, slots=True)
class _LagFamilies:
    """The gauge families one scrape of :class:`LagCollector` serves, and how a read fills them."""

    lag: GaugeMetricFamily
    seconds: GaugeMetricFamily
    committed: GaugeMetricFamily
    log_end: GaugeMetricFamily
    lag_max: GaugeMetricFamily
    lag_sum: GaugeMetricFamily
    seconds_max: GaugeMetricFamily
    members: GaugeMetricFamily
    status: GaugeMetricFamily
    read_ok: GaugeMetricFamily
    read_ts: GaugeMetricFamily

    @classmethod
    def empty(cls) -> _LagFamilies:
        """Every family, without samples: per partition, per group, then the read's health."""
        part = ["group", "topic", "partition"]
        lag = GaugeMetricFamily(
            "interest_consumer_lag",
            "Log-end offset minus committed offset (clamped at 0); no sample without a commit",
            labels=part,
        )
        seconds = GaugeMetricFamily(
            "interest_consumer_lag_seconds",
            "Age of the oldest unconsumed record (now minus the timestamp at the committed offset)",
            labels=part,
        )
        committed = GaugeMetricFamily(
            "interest_consumer_committed_offset", "Committed offset of the group", labels=part
        )
        log_end = GaugeMetricFamily(
            "interest_consumer_log_end_offset",
            "Log-end offset (high watermark) of the partition",
            labels=part,
        )
        lag_max = GaugeMetricFamily(
            "interest_consumer_group_lag_max",
            "Largest partition lag of the group",
            labels=["group"],
        )
        lag_sum = GaugeMetricFamily(
            "interest_consumer_group_lag_sum", "Sum of the group's partition lags", labels=["group"]
        )
        seconds_max = GaugeMetricFamily(
            "interest_consumer_group_lag_seconds_max",
            "Age of the group's oldest unconsumed record",
            labels=["group"],
        )
        members = GaugeMetricFamily(
            "interest_consumer_group_members", "Members of the consumer group", labels=["group"]
        )
        status = GaugeMetricFamily(
            "interest_consumer_group_status",
            "1 for the group's current status (OK, lagging, stalled, stopped, unknown)",
            labels=["group", "status"],
        )
        read_ok = GaugeMetricFamily(
            "interest_consumer_lag_read_ok", "1 if the last lag read from the brokers succeeded"
        )
        read_ts = GaugeMetricFamily(
            "interest_consumer_lag_read_timestamp_seconds", "Wall time of the last good lag read"
        )
        return cls(
            lag, seconds, committed, log_end, lag_max, lag_sum, seconds_max, members, status,
            read_ok, read_ts,
        )  # fmt: skip

    def ordered(self) -> list[Metric]:
        """The families in the order they are served (the order of the fields)."""
        return [
            self.lag, self.seconds, self.committed, self.log_end, self.lag_max, self.lag_sum,
            self.seconds_max, self.members, self.status, self.read_ok, self.read_ts,
        ]  # fmt: skip

    def add_partitions(self, sample: GroupSample) -> None:
        """One group's per-partition values; a value the read lacks gets no sample."""
        for p in sample.partitions:
            labels = [sample.group, p.topic, str(p.partition)]
            if p.lag is not None:
                self.lag.add_metric(labels, p.lag)
            if p.lag_seconds is not None:
                self.seconds.add_metric(labels, p.lag_seconds)
            if p.committed is not None:
                self.committed.add_metric(labels, p.committed)
            if p.log_end is not None:
                self.log_end.add_metric(labels, p.log_end)

    def add_group(self, sample: GroupSample, current: Verdict | None) -> None:
        """One group's totals and members, and its status as one 0/1 series per status (1 for
        ``current``; all 0 without a verdict)."""
        g = sample.group
        totals = sample.totals
        if totals.lag_max is not None:
            self.lag_max.add_metric([g], totals.lag_max)
        if totals.lag_sum is not None:
            self.lag_sum.add_metric([g], totals.lag_sum)
        if totals.lag_seconds_max is not None:
            self.seconds_max.add_metric([g], totals.lag_seconds_max)
        self.members.add_metric([g], sample.members)
        for s in Status:
            self.status.add_metric([g, str(s)], 1.0 if current and current.status == s else 0.0)

    def add_read(self, read_ok: bool, last_read: float | None) -> None:
        """Whether the last read succeeded, and when the last good one was taken."""
        self.read_ok.add_metric([], 1.0 if read_ok else 0.0)
        if last_read is not None:
            self.read_ts.add_metric([], last_read)


class LagCollector(Collector):
    """Prometheus collector of consumer lag: refresh asynchronously, then render synchronously.

    ``collect()`` serves the last successful read. A failed read drops the lag series (stale
    numbers would look like a flat, healthy line) and sets ``interest_consumer_lag_read_ok`` to 0.
    Reads closer together than ``min_interval_s`` reuse the last one, so several scrapers do not
    multiply the load on the brokers. The status gauge is judged over the last ``window`` reads.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        groups: Iterable[str],
        *,
        registry: CollectorRegistry | None = None,
        min_interval_s: float = 5.0,
        timeout_s: float = 5.0,
        window: int = DEFAULT_WINDOW,
        reader: LagReader | None = None,
    ) -> None:
        self.kafka = kafka
        self.groups = list(dict.fromkeys(groups))
        self.min_interval_s = min_interval_s
        self.timeout_s = timeout_s
        self.reader = reader or LagReader(kafka)
        self.window = SampleWindow(window)
        self.samples: list[GroupSample] = []
        self.verdicts: dict[str, Verdict] = {}
        self.read_ok = False
        self.last_read: float | None = None  # wall time of the last successful read
        self.read_seconds: float | None = None
        self._last_attempt: float | None = None  # monotonic
        self._lock = asyncio.Lock()
        if registry is not None:
            registry.register(self)

    async def refresh(self) -> None:
        """Read lag from the brokers (bounded by ``timeout_s``); never raises for broker trouble."""
        async with self._lock:
            now = time.monotonic()
            if self._last_attempt is not None and now - self._last_attempt < self.min_interval_s:
                return
            self._last_attempt = now
            try:
                samples = await asyncio.wait_for(self.reader.read(self.groups), self.timeout_s)
            except READ_ERRORS as exc:
                log.warning("consumer lag read failed: %s", exc or type(exc).__name__)
                self.samples, self.verdicts, self.read_ok = [], {}, False
                with contextlib.suppress(*READ_ERRORS):
                    await self.reader.close()  # reconnect on the next read
                return
            self.read_seconds = time.monotonic() - now
            self.samples = samples
            self.verdicts = {s.group: self.window.add(s) for s in samples}
            self.read_ok = True
            self.last_read = samples[0].taken_at if samples else time.time()

    async def close(self) -> None:
        await self.reader.close()

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._families(with_samples=True)

    def _families(self, *, with_samples: bool = False) -> Iterator[Metric]:
        """The lag gauge families, empty for ``describe``, filled from the last read for
        ``collect``; always all of them, in the same order."""
        families = _LagFamilies.empty()
        if with_samples:
            for sample in self.samples:
                families.add_partitions(sample)
                families.add_group(sample, self.verdicts.get(sample.group))
            families.add_read(self.read_ok, self.last_read)
        yield from families.ordered()
