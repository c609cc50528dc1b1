"""The stream worker as a faust-streaming app: ``interest.events`` -> ``interest.updates``.

One agent consumes the events topic and the repartition topic and feeds batches to a
:class:`~streams.stream.processor.StreamProcessor` (validation, numbering, triggers, the restart
protocol -- all there); the per-user state lives in a faust table whose changelog this module
writes. A second agent consumes the item repartition topic into the item popularity table
(:class:`~streams.stream.popularity.PopularityProcessor`, off with
``INTEREST_STREAM_POPULARITY_ENABLED=false``). A timer task flushes idle users and emits changed
item popularity. A small aiohttp server (:mod:`streams.stream.metrics`, port
``INTEREST_STREAM_METRICS_PORT``, 8766) serves ``/metrics`` (the counters and the lag of this
app's consumer group, read from the brokers when scraped) and ``/healthz``. Run it with
:func:`run_stream_worker` (``interest-stream stream``).

What faust-streaming 0.15.3 does, read from its source (faust-streaming/faust) and checked here:

(a) Offsets are committed only after the producer is flushed: ``Consumer._commit_offsets``
    (faust/transport/consumer.py) runs ``await self.app.producer.flush()`` and only then
    ``self._commit(...)`` (non-transactional path); ``Producer.flush`` (transport/drivers/
    aiokafka.py) drains faust's send_soon buffer (where ``table[k] = v`` puts changelog writes)
    and then aiokafka's accumulator (where this worker's own sends go). Only *acked* events
    count (``_new_offset`` stops at the first gap). Caveat: aiokafka's flush does not raise for a
    batch that failed after retries, so a failed changelog write could still be followed by a
    commit; that needs the broker gone past ``delivery.timeout``, and then the job send fails
    too, which stops this worker.
(b) A table write needs the current event's partition: ``Table.on_key_set`` ->
    ``partition_for_key`` -> ``current_event()`` (tables/base.py) raises "Cannot modify table key
    from outside of stream iteration" in a timer, and also inside ``stream.take()`` batches where
    the context variable is unset (faust-streaming issue #497; verified: ``current_event()`` is
    None in a take_events body). ``use_partitioner=True`` defers to the producer's partitioner
    with eager partitioning, which crashes (``partitions_for_topic`` is None) if a timer writes
    before the producer has metadata for the changelog topic (verified). So this worker writes
    the table's store and its changelog record itself, to partition ``murmur2(user_id) % N`` --
    the partition every record it applies came from (and the table's ``partition_for_key`` says
    the same): changelog partition == source partition, from the agent and the timer alike.
(c) ``stream.take(n, within)`` / ``take_events``: ``within`` bounds the wait from the start of each
    wait, and an idle stream with an empty buffer yields nothing -- the loop just waits again
    (streams.py), so take() alone cannot flush an idle user: a timer has to. Worse, take() acks
    the buffered events in a ``finally`` after the ``yield``, which also runs when the generator
    is closed after an exception or cancellation in the agent body (``Stream.on_stop`` closes
    abandoned generators) -- the batch would be committed unprocessed. This worker therefore
    iterates ``stream.noack()`` in a feeder task, batches from a bounded queue itself and acks
    each event only after its batch is fully processed.
(d) Kafka 4.x: faust-streaming issue #655 / PR #714 report faust working against Kafka 4.0 with
    aiokafka 0.14.0; this project runs it against Apache Kafka 4.1.1 (KRaft) in its integration
    tests and benchmark (produce, consume, group rebalance, changelog, offset commit).

(e) faust can lose records around a rebalance: its recovery clears the agents' queues after it
    has resumed and sought the partitions, and a fetch straddling a seek hands on stale records,
    which faust then counts as a committable gap. Both are repaired in
    :mod:`streams.stream.faust_ordering`
    (a reordered recovery, and a consumer that hands on each partition's records without holes);
    the latter needs each partition's committed offset, so :func:`run_stream_worker` commits the
    log start where the group has none before it starts (:mod:`streams.stream.group_offsets`).

Stopping: the first SIGTERM/SIGINT is faust's graceful stop -- fetching stops, the agent processes
what was already fetched (faust waits for every fetched event to be acked), offsets are committed,
the lazy writes go out, the producer is flushed. A second signal exits at once (like a crash).

Cost (bench/stream_bench.py): faust's per-event path (fetch, stream, ack) is the floor; a user
with one event per job costs one job and about 1.3 changelog writes per event on top of it.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from streams.contracts.events import DEFAULT_RULES, EventRules
from streams.dlq_metrics import DeadLetterCounter
from streams.lag import LagCollector
from streams.settings import IntakeSettings, KafkaSettings, TopicSettings
from streams.stream.faust_tables import ProducerSink, TableStore, backing_for, state_table
from streams.stream.group_offsets import commit_start_offsets
from streams.stream.metrics import MetricsServer, StreamMetrics
from streams.stream.popularity import PopularityProcessor
from streams.stream.processor import StreamProcessor
from streams.stream.settings import StreamSettings
from streams.stream.types import Headers, Record, Sink, Topics, partition_for
from streams.stream.types import StreamStats as StreamStats  # re-exported
from streams.topics import ensure_copartitioned, ensure_popularity_topic, ensure_topics

log = logging.getLogger(__name__)


#: Most items one popularity tick looks at (after a restart every item is looked at once, to
#: re-arm its decay check; the rest wait for the next tick).
POPULARITY_CHUNK = 50_000


class StreamWorker:
    """The faust app, its tables, agents and timer around a :class:`StreamProcessor` (and a
    :class:`~streams.stream.popularity.PopularityProcessor` unless popularity is off), plus the
    metrics server."""

    def __init__(
        self,
        settings: StreamSettings,
        *,
        kafka: KafkaSettings,
        partitions: int,
        topics: Topics | None = None,
        replication_factor: int = 1,
        rules: EventRules = DEFAULT_RULES,
        sink: Sink | None = None,
    ) -> None:
        self.settings = settings
        self.kafka = kafka
        self.topics = topics = topics or Topics()
        self.app = app = _make_app(settings, kafka, partitions, replication_factor)
        self.table = state_table(
            app,
            partitions,
            "user-state",
            "per-user stream state (streams.stream.userstate)",
            options=settings.rocksdb_options(),
        )
        sink = sink if sink is not None else ProducerSink(app)
        popularity = bool(topics.items)
        self.processor = StreamProcessor(
            store=TableStore(self.table, sink, partitions, backing_for(self.table)),
            sink=sink,
            partitions=partitions,
            policy=settings.trigger_policy(),
            limits=settings.state_limits(),
            rules=rules,
            topics=topics,
            popularity_half_life_s=settings.popularity_half_life_s if popularity else None,
        )
        channel = app.topic(
            topics.events, topics.repartition, key_type=bytes, value_type=bytes, acks=True
        )
        self.agent = app.agent(channel, name="interest-stream-events")(
            self._batches(self.processor.process_batch, "stream", observe=True)
        )
        self.popularity: PopularityProcessor | None = None
        self.item_table: Any = None
        if popularity:
            self._add_popularity(sink, partitions)
        self._wire_lifecycle()
        self.metrics_server: MetricsServer | None = None
        self.lag: LagCollector | None = None
        self.dead_letters: DeadLetterCounter | None = None
        self.state = "starting"
        self.owned: list[int] = []
        self._last_batch: float | None = None
        self._tick = asyncio.Lock()

    def _add_popularity(self, sink: Sink, partitions: int) -> None:
        """The item table, the popularity processor and its agent on the item topic."""
        app, topics = self.app, self.topics
        self.item_table = state_table(
            app,
            partitions,
            "item-popularity",
            "decayed counts per item (streams.stream.popularity)",
            options=self.settings.rocksdb_options(),
        )
        self.popularity = PopularityProcessor(
            store=TableStore(self.item_table, sink, partitions, backing_for(self.item_table)),
            sink=sink,
            partitions=partitions,
            partition_of=partition_for,
            topic=topics.popularity,
            policy=self.settings.popularity_policy(),
            stats=self.processor.stats,
        )
        items = app.topic(topics.items, key_type=bytes, value_type=bytes, acks=True)
        self.item_agent = app.agent(items, name="interest-stream-items")(
            self._batches(self.popularity.apply, "popularity")
        )

    def _wire_lifecycle(self) -> None:
        """The timer, faust's recovery/revocation/shutdown hooks and the metrics (served once
        the worker starts, see :meth:`start_metrics`)."""
        app = self.app
        app.task(self._timer)
        self.table.on_recover(self._on_recover)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_before_shutdown.connect(self._on_shutdown)
        self.metrics = StreamMetrics(self.processor.stats, repairs=lambda: _repairs(app))
        self.metrics.flush_lead.set_function(lambda: self.processor.lead.get() / 1000)
        check_faust_contract(app)

    def _batches(
        self,
        process: Callable[[Sequence[Record]], Awaitable[None]],
        what: str,
        *,
        observe: bool = False,
    ) -> Callable[[Any], Awaitable[None]]:
        """An agent body: batches of this agent's records to ``process``, acked after it."""

        async def agent(stream: Any) -> None:
            s = self.settings
            queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=2 * s.batch_max)
            manual = stream.noack()

            async def feed() -> None:
                async for event in manual.events():
                    await queue.put(event)

            feeder = asyncio.ensure_future(feed())
            try:
                while True:
                    batch = await _collect(queue, s.batch_max, s.batch_within_s, feeder)
                    if batch is None:  # the stream ended
                        if self.state in ("stopping", "crashed"):
                            # faust ends it to stop the worker: a crash here had the supervisor
                            # restart the agent mid-stop, and the stop then hung (seen once in
                            # CI, the rebalance test's SIGTERM unanswered for 60 s).
                            break
                        raise RuntimeError("the stream feeding the stream worker ended")
                    if not batch:
                        continue
                    try:
                        await process([_record_of(e.message) for e in batch])
                    except Exception as exc:
                        # Infrastructure failure (delivery, corrupt state): stop without
                        # acking, so the batch is replayed by whoever owns these partitions next.
                        log.critical("%s batch failed, stopping the worker: %r", what, exc)
                        await self._crash(exc)
                        break
                    for e in batch:
                        await manual.ack(e)
                    if observe:
                        self.metrics.batch_size.observe(len(batch))
                        self._last_batch = time.monotonic()
                # Crashed or stopping: park until faust cancels the agent (a returning agent
                # would be restarted by its supervisor).
                await asyncio.Event().wait()
            finally:
                feeder.cancel()

        return agent

    async def _timer(self) -> None:
        """Flush idle users on time, emit popularity, sweep idle users' states in chunks (a
        plain loop: mode's timers warn on every
        slow tick). Each tick holds ``_tick``, so a stop can wait for the tick in progress: the
        producer closes right after the shutdown hook."""
        last_log = last_popularity = last_sweep = time.monotonic()
        s = self.settings
        # Lazy writes come at the flush rate; send up to 4x that rate, in small chunks.
        chunk = max(100, int(4 * s.timer_interval_s * 10_000))
        while True:
            await asyncio.sleep(s.timer_interval_s)
            async with self._tick:
                if self.state in ("stopping", "crashed"):
                    return
                if time.monotonic() - last_log >= s.stats_interval_s:
                    last_log = time.monotonic()
                    log.info("stream worker stats: %s", self.processor.stats)
                try:
                    await self.processor.persist(s.persist_interval_s, chunk)
                    await self.processor.flush_due()
                    if time.monotonic() - last_sweep >= s.state_sweep_interval_s:
                        last_sweep = time.monotonic()
                        idle_ms = round(s.state_idle_after_s * 1000)
                        await self.processor.compact_idle(idle_ms, s.state_sweep_chunk)
                    if self.popularity is not None:
                        await self.popularity.persist(s.persist_interval_s, chunk)
                        if time.monotonic() - last_popularity >= s.popularity_interval_s:
                            last_popularity = time.monotonic()
                            await self.popularity.emit_due(POPULARITY_CHUNK)
                except Exception as exc:
                    log.critical("timer failed, stopping the worker: %r", exc)
                    await self._crash(exc)
                    return

    async def _crash(self, exc: BaseException) -> None:
        self.state = "crashed"
        self.metrics.consuming.set(0)
        await self.app.crash(exc)

    async def _on_recover(self) -> None:
        # After each recovery, when both tables are recovered (registered on one of them).
        actives = self.app.assignor.assigned_actives()
        owned = {tp.partition for tp in actives if tp.topic == self.topics.events}
        self.processor.on_assigned(owned)
        if self.popularity is not None:
            self.popularity.on_assigned(
                {tp.partition for tp in actives if tp.topic == self.topics.items}
            )
        self.owned = sorted(owned)
        if self.state in ("starting", "rebalancing"):
            self.state = "consuming"
            self.metrics.consuming.set(1)
            log.info("stream worker owns partitions %s", self.owned)

    async def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        if self.state == "consuming":
            self.state = "rebalancing"
            self.metrics.consuming.set(0)
        await self.processor.on_revoked()
        if self.popularity is not None:
            await self.popularity.on_revoked()

    async def _on_shutdown(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        self.stopping()
        async with self._tick:  # a timer tick in progress finishes; no new one starts
            pass
        await self.processor.persist()  # faust flushes the producer right after this
        if self.popularity is not None:
            await self.popularity.persist()
        await self.stop_metrics()

    # -- metrics ------------------------------------------------------------------------------

    def stopping(self) -> None:
        if self.state != "crashed":
            self.state = "stopping"
        self.metrics.consuming.set(0)

    def health(self) -> dict[str, Any]:
        """For ``/healthz``: ``ok`` while consuming (partitions recovered, not stopping)."""
        age = None if self._last_batch is None else round(time.monotonic() - self._last_batch, 3)
        state = self.state
        return {
            "status": "ok" if state == "consuming" else state,
            "consuming": state == "consuming",
            "worker": "stream",
            "group": self.settings.app_id,
            "assigned": [f"{self.topics.events}/{p}" for p in self.owned],
            "last_batch_age_s": age,
            "events": self.processor.stats.events,
        }

    async def start_metrics(self) -> None:
        """Serve ``/metrics`` (with the lag of this app's group) and ``/healthz``.

        A port already in use is logged and the worker runs on without them (Prometheus shows
        the target down): metrics must not stop the stream.
        """
        s = self.settings
        if not s.metrics_enabled or self.metrics_server is not None:
            return
        self.lag = LagCollector(self.kafka, [s.app_id], registry=self.metrics.registry)
        # Every stage's dead letters, publish's included (streams.dlq_metrics).
        self.dead_letters = DeadLetterCounter(
            self.kafka, self.topics.dlq, registry=self.metrics.registry
        )
        server = MetricsServer(
            s.metrics_host,
            s.metrics_port,
            self.metrics.registry,
            health=self.health,
            refresh=[self.lag, self.dead_letters],
        )
        try:
            await server.start()
        except OSError as exc:
            log.error(
                "cannot serve metrics on %s:%s (%s); running without them "
                "(set INTEREST_STREAM_METRICS_PORT, 0 = any free port)",
                s.metrics_host, s.metrics_port, exc.strerror or exc,
            )  # fmt: skip
            await server.stop()
            return
        self.metrics_server = server
        log.info("stream worker metrics on http://%s:%s/metrics", s.metrics_host, server.port)

    async def stop_metrics(self) -> None:
        if self.metrics_server is not None:
            await self.metrics_server.stop()
            self.metrics_server = None
        if self.lag is not None:
            await self.lag.close()
            self.lag = None
        if self.dead_letters is not None:
            await self.dead_letters.close()
            self.dead_letters = None


def _record_of(message: Any) -> Record:
    """What the processor needs of a faust message."""
    return Record(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=message.value,
        timestamp_ms=int(message.timestamp * 1000) if message.timestamp else None,
        headers=_headers_of(message.headers),
    )


def _headers_of(raw: Any) -> Headers | None:
    """A faust message's headers (a list of pairs, or a mapping) as a list of pairs."""
    if not raw:
        return None
    pairs = raw.items() if isinstance(raw, Mapping) else raw
    return [(str(name), bytes(value or b"")) for name, value in pairs]


def _make_app(
    settings: StreamSettings, kafka: KafkaSettings, partitions: int, replication_factor: int
) -> Any:
    """The faust app, with the ordering repairs of :mod:`streams.stream.faust_ordering`."""
    import faust

    from streams.stream.faust_ordering import GaplessConsumer, OrderedTableManager

    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{h.strip()}" for h in kafka.bootstrap.split(",") if h.strip()],
        broker_client_id=kafka.client_id,
        broker_credentials=_credentials(kafka),
        # faust refuses a request timeout below the session timeout.
        broker_request_timeout=max(kafka.request_timeout_s, settings.session_timeout_s),
        broker_session_timeout=settings.session_timeout_s,
        broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 10),
        store=settings.table_store_url(),  # the state tables' (streams.stream.faust_tables)
        autodiscover=False,
        web_enabled=False,
        datadir=str(settings.faust_data_dir()),
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=partitions,
        topic_replication_factor=replication_factor,
        table_standby_replicas=settings.standby_replicas,
        broker_commit_interval=settings.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=True,
        producer_linger=settings.producer_linger_s,
        # faust's recovery drops records fetched while it seeks (streams.stream.faust_ordering).
        TableManager=OrderedTableManager,
    )
    # ... and can hand on records across a seek out of order: faust builds its consumer from
    # the transport's ``Consumer``, so it is shadowed on this transport.
    setattr(app.transport, "Consumer", GaplessConsumer)  # noqa: B010 (a ClassVar to mypy)
    return app


def check_faust_contract(app: Any) -> None:
    """Refuse a configuration in which faust's open loss issues could bite (docs/ARCHITECTURE.md,
    "faust's upstream issues"): an agent with concurrency > 1 acks out of order, and faust can
    then commit past an event still in flight (faust-streaming #606); a reset to the latest
    offset skips records (and hangs recovery when changelog segments go, #651)."""
    concurrent = [a.name for a in app.agents.values() if a.concurrency != 1]
    reset = app.conf.consumer_auto_offset_reset
    if concurrent or reset != "earliest":
        raise RuntimeError(f"faust contract broken: concurrency > 1 in {concurrent}, reset {reset}")


def _repairs(app: Any) -> Mapping[str, int]:
    # faust builds its consumer (a GaplessConsumer, see StreamWorker) when the app starts; a
    # scrape must not build it earlier.
    consumer = app._consumer
    return consumer.repairs() if hasattr(consumer, "repairs") else {}


async def _collect(
    queue: asyncio.Queue[Any], max_: int, within: float, feeder: asyncio.Future[None]
) -> list[Any] | None:
    """Up to ``max_`` queued events: wait (bounded) for the first, then at most ``within``.
    None once the feeding stream has ended and its events are taken (its error is raised)."""
    try:
        first = await asyncio.wait_for(queue.get(), timeout=1.0)
    except TimeoutError:
        if feeder.done():
            feeder.result()  # re-raise the stream's error
            return None
        return []
    batch = [first]
    deadline = time.monotonic() + within
    while len(batch) < max_:
        if queue.empty():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), timeout=remaining))
            except TimeoutError:
                break
        else:
            batch.append(queue.get_nowait())
    return batch


# ---------------------------------------------------------------------------------------------
# running


def _credentials(kafka: KafkaSettings) -> Any:
    """faust's form of the SASL/SSL settings in KafkaSettings (None for PLAINTEXT); the TLS
    context is the one every aiokafka client of the project gets (KafkaSettings.ssl_context)."""
    import faust

    context = kafka.ssl_context()
    if kafka.sasl_mechanism:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.password(),
            mechanism=kafka.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def run_stream_worker(
    settings: StreamSettings | None = None,
    *,
    kafka: KafkaSettings | None = None,
    topics: TopicSettings | None = None,
    intake: IntakeSettings | None = None,
) -> int:
    """Run one stream worker until SIGTERM/SIGINT; return the exit code (0 after a clean stop).

    Settings default to the environment / config file. Creates missing topics. The first signal
    finishes the running batch, commits and closes; a second one exits at once (which is the
    same as a crash: the design survives it).
    """
    settings = settings or StreamSettings()
    kafka = kafka or KafkaSettings()
    topics = topics or TopicSettings()
    intake = intake or IntakeSettings()
    settings.faust_data_dir().mkdir(parents=True, exist_ok=True)
    popularity = settings.popularity_enabled
    partitions = asyncio.run(_prepare_topics(settings, kafka, topics))
    worker = StreamWorker(
        settings,
        kafka=kafka,
        partitions=partitions,
        topics=Topics(
            events=topics.events,
            updates=topics.updates,
            dlq=topics.dlq,
            repartition=settings.repartition_topic,
            items=settings.item_topic() if popularity else "",
            popularity=topics.popularity,
        ),
        replication_factor=topics.replication_factor,
        rules=intake.rules(),
    )
    # faust logs to stdout, which Python block-buffers when it is a pipe or a file (systemd, a
    # container runtime, a test's log file): the last lines before a crash or a kill -9 -- the
    # ones that explain it -- would never be written, and a log shipper sees the rest late.
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)
    asyncio.set_event_loop(asyncio.new_event_loop())
    faust_worker = _faust_worker(worker)
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


async def _prepare_topics(
    settings: StreamSettings, kafka: KafkaSettings, topics: TopicSettings
) -> int:
    """Create the missing topics (the internal ones co-partitioned with the events topic) and
    give every source partition a committed offset before the group starts; return the
    partition count."""
    internal = [settings.repartition_topic]
    changelogs = [f"{settings.app_id}-user-state-changelog"]
    if settings.popularity_enabled:
        internal.append(settings.item_topic())
        changelogs.append(f"{settings.app_id}-item-popularity-changelog")
    await ensure_topics(kafka, topics)
    if settings.popularity_enabled:
        await ensure_popularity_topic(kafka, topics)
    partitions = await ensure_copartitioned(kafka, topics, internal, changelogs)
    # Every source partition gets a committed offset before the group starts (see there).
    await commit_start_offsets(kafka, settings.app_id, [topics.events, *internal], partitions)
    return partitions


def _faust_worker(worker: StreamWorker) -> Any:
    """faust's Worker around the app: graceful stop on the first signal, exit on the second."""
    import faust

    class _Worker(faust.Worker):
        def _on_sigint(self) -> None:
            self._second_signal_exits(signal.SIGINT)
            worker.stopping()
            super()._on_sigint()

        def _on_sigterm(self) -> None:
            self._second_signal_exits(signal.SIGTERM)
            worker.stopping()
            super()._on_sigterm()

        async def on_first_start(self) -> None:
            await super().on_first_start()
            await worker.start_metrics()  # up during recovery: /healthz says "starting"

        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            # faust's terminal spinner sets the root logger to DEBUG (so it can spin on every
            # record): every aiokafka/faust debug record would be built, ~10 % of the CPU.
            self.spinner = None
            super().on_setup_root_logger(logger, level)

        def _second_signal_exits(self, signum: signal.Signals) -> None:
            if self._signal_stop_time is not None:
                log.warning("second %s while stopping: exiting now", signum.name)
                os._exit(128 + signum.value)

    return _Worker(
        worker.app, loglevel=worker.settings.loglevel, redirect_stdouts=False, quiet=True
    )


if __name__ == "__main__":
    raise SystemExit(run_stream_worker())
