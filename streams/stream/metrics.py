"""What a stream worker exports, and a small server for ``/metrics`` and ``/healthz``.

The stream worker already counts its work in ``StreamStats`` (:mod:`streams.stream.processor`);
:class:`StreamMetrics` reads those running totals at scrape time instead of asking every call
site to increment a second set of counters. faust runs with its web server off, so the worker
serves Prometheus through :class:`MetricsServer`, which also refreshes consumer lag (a
:class:`streams.lag.LagCollector`) before it renders::

    metrics = StreamMetrics(processor.stats)
    lag = LagCollector(kafka, [settings.app_id], registry=metrics.registry)
    server = MetricsServer(host, port, metrics.registry, health=worker.health, refresh=[lag])
    await server.start()
    metrics.consuming.set(1)   # once partitions are assigned; 0 when stopping
    ...
    await server.stop(); await lag.close()
"""

from __future__ import annotations

import logging
from collections import Counter as CounterOf
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

#: Records per processed batch (the stream worker's own scale, apart from the embed worker's).
BATCH_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000)


log = logging.getLogger(__name__)


class StatsLike(Protocol):
    """The running totals of a stream worker (``streams.stream.types.StreamStats``)."""

    records: int
    events: int
    duplicates: int
    replays: int
    forwarded: int
    folded: int
    compacted: int
    deletes: int
    batches: int
    jobs: int
    job_events: int
    dlq: CounterOf[str]
    flushes: CounterOf[str]
    item_interactions: int
    popularity_records: int
    popularity_replays: int
    popularity_invalid: int
    popularity_updates: int


class Refreshable(Protocol):
    async def refresh(self) -> None: ...


#: (attribute, metric name without _total, help) of the plain totals.
_TOTALS = (
    ("records", "interest_stream_records", "Records read from the events and repartition topics"),
    ("events", "interest_stream_events", "New valid events folded into user state"),
    ("duplicates", "interest_stream_duplicates", "Events dropped as already seen (event id)"),
    ("replays", "interest_stream_replays", "Records skipped as replays of applied offsets"),
    ("forwarded", "interest_stream_forwarded", "Events re-keyed to their user's partition"),
    ("folded", "interest_stream_folded", "Pending events folded early to bound user state"),
    (
        "compacted",
        "interest_stream_states_compacted",
        "Idle users' states shrunk to numbering and offsets",
    ),
    ("deletes", "interest_stream_user_deletes", "Users forgotten on request (state deleted)"),
    ("batches", "interest_stream_batches", "Batches processed"),
    ("jobs", "interest_stream_jobs", "Update jobs emitted to the embed workers"),
    ("job_events", "interest_stream_job_events", "Events carried by emitted update jobs"),
    (
        "item_interactions",
        "interest_stream_item_interactions",
        "New events counted into their item's popularity (item_id, positive weight)",
    ),
    (
        "popularity_records",
        "interest_stream_popularity_records",
        "Per-batch item count records applied to the item popularity table",
    ),
    (
        "popularity_replays",
        "interest_stream_popularity_replays",
        "Item counts skipped as replays of applied records",
    ),
    (
        "popularity_invalid",
        "interest_stream_popularity_invalid",
        "Unreadable or misrouted item count records (skipped)",
    ),
    (
        "popularity_updates",
        "interest_stream_popularity_updates",
        "Item popularity values emitted to the popularity topic",
    ),
)


class _StatsCollector(Collector):
    def __init__(self, stats: StatsLike) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        for attr, name, doc in _TOTALS:
            family = CounterMetricFamily(name, doc)
            family.add_metric([], getattr(self.stats, attr))
            yield family
        dlq = CounterMetricFamily(
            "interest_stream_dlq",
            "Records sent to the dead-letter topic, by reason",
            labels=["reason"],
        )
        for reason, n in sorted(self.stats.dlq.items()):
            dlq.add_metric([str(reason)], n)
        yield dlq
        flushes = CounterMetricFamily(
            "interest_stream_flushes", "User flushes (update jobs) by trigger", labels=["reason"]
        )
        for reason, n in sorted(self.stats.flushes.items()):
            flushes.add_metric([str(getattr(reason, "value", reason))], n)
        yield flushes

    def describe(self) -> Iterator[Metric]:
        return self.collect()


class StreamMetrics:
    """What a stream worker exports (its own registry, as
    :class:`streams.embed.metrics.EmbedMetrics`)."""

    def __init__(
        self,
        stats: StatsLike,
        registry: CollectorRegistry | None = None,
        *,
        repairs: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        """``repairs`` gives the consumer's running totals of what it repaired around faust
        (``GaplessConsumer.repairs``), read at scrape time."""
        self.registry = registry or CollectorRegistry()
        r = self.registry
        r.register(_StatsCollector(stats))
        r.register(_RepairsCollector(repairs))
        self.consuming = Gauge(
            "interest_worker_consuming", "1 while the worker is consuming", registry=r
        )
        self.flush_lead = Gauge(
            "interest_stream_flush_lead_seconds",
            "How much earlier than max_delay minus slack the worker flushes on age, learned from "
            "its own late deliveries (streams.stream.triggers.FlushLead); "
            "above 0 means a busy worker",
            registry=r,
        )
        self.batch_size = Histogram(
            "interest_stream_batch_size",
            "Records per stream batch",
            buckets=BATCH_BUCKETS,
            registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _RepairsCollector(Collector):
    def __init__(self, repairs: Callable[[], Mapping[str, int]]) -> None:
        self.repairs = repairs

    def collect(self) -> Iterator[Metric]:
        family = self._family()
        for kind, n in sorted(self.repairs().items()):
            family.add_metric([kind], n)
        yield family

    def describe(self) -> Iterator[Metric]:
        # Without reading the consumer: faust creates it on first access, which must happen on
        # the worker's event loop, not at registration.
        yield self._family()

    @staticmethod
    def _family() -> CounterMetricFamily:
        return CounterMetricFamily(
            "interest_stream_consumer_repairs",
            "What the stream consumer repaired around faust "
            "(streams.stream.faust_ordering): refetch = "
            "records read again (a stale fetch, or records fetched and lost on the way), gap = "
            "an offset jump accepted as holding no records, "
            "stall = a partition put back into the fetch after it stopped being read",
            labels=["kind"],
        )


class MetricsServer:
    """``GET /metrics`` (refreshing ``refresh`` collectors first) and ``GET /healthz``.

    ``health`` returns a dict with ``status`` ("ok" when consuming → 200, else 503), as the embed
    worker's API does. Port 0 picks a free port (``self.port`` says which).
    """

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        *,
        health: Callable[[], dict[str, Any]],
        refresh: Sequence[Refreshable] = (),
    ) -> None:
        self.host = host
        self.port = port
        self.registry = registry
        self.health = health
        self.refresh = list(refresh)
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.get("/metrics", self._metrics), web.get("/healthz", self._healthz)])
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        log.info("metrics on http://%s:%s/metrics", self.host, self.port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        for collector in self.refresh:
            await collector.refresh()
        body = generate_latest(self.registry)
        return web.Response(body=body, content_type="text/plain", charset="utf-8")

    async def _healthz(self, request: web.Request) -> web.Response:
        body = self.health()
        return web.json_response(body, status=200 if body.get("status") == "ok" else 503)
