"""The stream worker: a faust-streaming app from ``interest.events`` to ``interest.updates``.

Per record: validate (bad input -> DLQ with a reason, never a crash); make sure the record sits in
its user's partition ``murmur2(user_id) % N`` (otherwise re-key it to the repartition topic, which
the same agent consumes); apply it to the user's state (numbering, dedupe, pending, activity --
:mod:`streams.userstate`); per batch, ask the trigger policy (:mod:`streams.triggers`) which users
are due and emit one :class:`~streams.jobs.UpdateJob` per due user. A timer task flushes idle
users whose oldest pending event is about to exceed max_delay (counted from the record's Kafka
timestamp). Run it with :func:`run_stream_worker` (``interest-stream stream``).

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

Restart safety (kill -9 at any point loses no event and never renumbers one):
    1. apply a batch, write each touched user's state once (numbers, offsets, pending);
    2. if any user is due: barrier -- ``producer.flush()``, so those states are in the changelog;
    3. send the jobs and await their delivery;
    4. drop the delivered events from pending; that state goes to the changelog lazily (with the
       user's next batch, within ``persist_interval_s``, before a revocation, at shutdown);
    5. ack the batch's events (faust commits them at the next commit, after a producer flush).
A job therefore never leaves before the numbering it carries is durable, whatever a replay would
decide differently (a clock that moved on, changed settings, re-keyed records interleaving). A
crash between 3 and the write of 4 re-emits the same events with the same numbers (the embed worker
drops n <= its seq). A crash before the commit replays records; those at or below the offset
stored in the user's state are skipped exactly. The timer runs 2-4 for idle users under the same
lock as the agent, and only for partitions this worker owns; on revocation it finishes under the
lock, writes everything and flushes the producer before faust hands the partitions over.

Stopping: the first SIGTERM/SIGINT is faust's graceful stop -- fetching stops, the agent processes
what was already fetched (faust waits for every fetched event to be acked), offsets are committed,
the lazy writes go out, the producer is flushed. A second signal exits at once (like a crash).

Cost (bench/stream_bench.py): faust's per-event path (fetch, stream, ack) is the floor; a user
with one event per job costs one job and about 1.3 changelog writes per event on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import os
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from aiokafka.partitioner import murmur2

from streams.dlq import DeadLetter, kafka_source
from streams.events import DEFAULT_RULES, EventRules, InvalidEvent, parse_event
from streams.settings import IntakeSettings, KafkaSettings, TopicSettings
from streams.stream_settings import StreamSettings
from streams.triggers import FlushReason, TriggerPolicy
from streams.userstate import (
    Applied,
    StateLimits,
    UserState,
    has_pending,
)

log = logging.getLogger(__name__)

#: Index of each source topic in a state's per-source offsets (streams.userstate.SOURCES).
SOURCE_EVENTS = 0
SOURCE_REPARTITION = 1

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Topics:
    """The topic names the processor uses (from TopicSettings and StreamSettings)."""

    events: str = "interest.events"
    updates: str = "interest.updates"
    dlq: str = "interest.events.dlq"
    repartition: str = "interest.events.repartition"


@dataclass(frozen=True, slots=True)
class Record:
    """What the processor needs of one consumed Kafka record."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    #: The record's Kafka timestamp (epoch ms; None: unknown, taken as "now").
    timestamp_ms: int | None = None


@lru_cache(maxsize=65536)
def _murmur(key: bytes) -> int:
    return int(murmur2(key)) & 0x7FFFFFFF


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (Java client, aiokafka): murmur2(key) mod partitions."""
    return _murmur(key) % partitions


def dlq_record(
    rec: Record, raw: bytes, *, reason: str, detail: str, now_ms: int
) -> tuple[bytes, Headers]:
    """The DLQ value (the original bytes) and headers of a rejected record (streams.dlq)."""
    letter = DeadLetter(
        key=rec.key,
        value=raw,
        reason=reason,
        detail=detail,
        source=kafka_source(rec.topic, rec.partition, rec.offset),
        stage="stream",
        ts_ms=now_ms,
    )
    return letter.value, letter.headers()


class Sink(Protocol):
    """Where the processor produces to (the faust producer in the worker, a fake in tests)."""

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> Awaitable[Any]:
        """Queue a record; the returned awaitable resolves when it is delivered."""
        ...

    async def barrier(self) -> None:
        """Return when everything sent so far, table changelog writes included, is delivered."""
        ...


class StateStore(Protocol):
    """The per-user state table: key = user_id (UTF-8), value = UserState.to_bytes()."""

    def get(self, key: bytes) -> bytes | None: ...

    def set(self, key: bytes, value: bytes) -> None:
        """Store locally now; the changelog record goes out at the next :meth:`write_back`."""
        ...

    def set_lazy(self, key: bytes, value: bytes) -> None:
        """Store locally now; the changelog record waits for :meth:`write_back_lazy` unless a
        :meth:`set` of the same key comes first (for writes whose loss a restart tolerates)."""
        ...

    def items(self) -> Iterable[tuple[bytes, bytes]]: ...

    async def write_back(self) -> None:
        """Hand the changelog records of all :meth:`set` writes to the producer (not awaited)."""
        ...

    def lazy_due(self, max_age_s: float) -> bool:
        """Whether a :meth:`set_lazy` write is waiting for at least ``max_age_s``."""
        ...

    async def write_back_lazy(self, max_age_s: float = 0.0, limit: int | None = None) -> None:
        """Also hand over the :meth:`set_lazy` writes waiting >= ``max_age_s`` (oldest first,
        at most ``limit``), then :meth:`write_back`."""
        ...


@dataclass
class StreamStats:
    """Counters of one worker (exported as metrics by the caller)."""

    records: int = 0
    events: int = 0
    duplicates: int = 0
    replays: int = 0
    forwarded: int = 0
    folded: int = 0
    batches: int = 0
    jobs: int = 0
    job_events: int = 0
    dlq: Counter[str] = field(default_factory=Counter)
    flushes: Counter[str] = field(default_factory=Counter)


@dataclass
class _Due:
    key: bytes
    user_id: str
    state: UserState
    reason: FlushReason


class StreamProcessor:
    """Batches in, jobs out: the worker's logic, independent of faust (which feeds it)."""

    def __init__(
        self,
        *,
        store: StateStore,
        sink: Sink,
        partitions: int,
        policy: TriggerPolicy,
        limits: StateLimits,
        rules: EventRules = DEFAULT_RULES,
        topics: Topics = Topics(),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.sink = sink
        self.partitions = partitions
        self.policy = policy
        self.limits = limits
        self.rules = rules
        self.topics = topics
        self.clock = clock
        self.stats = StreamStats()
        #: Serialises batches, timer flushes and revocation: no interleaved read-modify-write.
        self.lock = asyncio.Lock()
        #: Partitions (of the events topic) this worker owns; the timer flushes only these.
        self.active: set[int] = set()
        self._heap: list[tuple[int, bytes]] = []
        self._scheduled: dict[bytes, int] = {}
        #: Decoded states of the users with pending events (the ones the timer will flush), so
        #: neither the next batch nor the timer decodes them again. Always equal to the table.
        self._hot: dict[bytes, UserState] = {}

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _load(self, key: bytes) -> UserState:
        state = self._hot.get(key)
        if state is not None:
            return state
        raw = self.store.get(key)
        return UserState() if raw is None else UserState.from_bytes(raw)

    def _save(self, key: bytes, state: UserState, *, lazy: bool = False) -> None:
        if lazy:
            self.store.set_lazy(key, state.to_bytes())
        else:
            self.store.set(key, state.to_bytes())
        if state.pending:
            self._hot[key] = state
        else:
            self._hot.pop(key, None)

    # -- the agent's side ---------------------------------------------------------------------

    async def process_batch(self, records: Sequence[Record]) -> None:
        """Apply a batch and emit the jobs of due users. On return the batch may be acked: its
        jobs, dead letters and re-keyed records are delivered, its state writes are with the
        producer (which faust flushes before it commits the offsets)."""
        async with self.lock:
            now = self._now_ms()
            sends: list[Awaitable[Any]] = []
            touched: dict[bytes, tuple[str, UserState]] = {}
            for rec in records:
                await self._route(rec, now, touched, sends)
            due: list[_Due] = []
            for key, (user_id, state) in touched.items():
                self._save(key, state)
                reason = self.policy.decide(state.view(), now)
                if reason is not None:
                    due.append(_Due(key, user_id, state, reason))
            await self.store.write_back()
            if due:
                await self._emit(due, now, check_active=False)
            for key, (_user_id, state) in touched.items():
                self._schedule(key, state)
            if sends:
                await asyncio.gather(*sends)
            self.stats.batches += 1

    async def _route(
        self,
        rec: Record,
        now: int,
        touched: dict[bytes, tuple[str, UserState]],
        sends: list[Awaitable[Any]],
    ) -> None:
        self.stats.records += 1
        raw = rec.value if rec.value is not None else b""
        try:
            event = parse_event(raw, now_ms=now, rules=self.rules)
        except InvalidEvent as exc:
            self.stats.dlq[exc.reason] += 1
            value, headers = dlq_record(rec, raw, reason=exc.reason, detail=exc.detail, now_ms=now)
            sends.append(await self.sink.send(self.topics.dlq, rec.key, value, headers=headers))
            return
        key = event.user_id.encode()
        partition = partition_for(key, self.partitions)
        if partition != rec.partition:
            # Not in its user's partition (unkeyed, keyed by something else, or another
            # partitioner): re-key it so that one partition -- one worker -- owns each user.
            self.stats.forwarded += 1
            origin = f"{rec.topic}:{rec.partition}:{rec.offset}".encode()
            sends.append(
                await self.sink.send(
                    self.topics.repartition,
                    key,
                    raw,
                    partition=partition,
                    headers=[("forwarded_from", origin)],
                )
            )
            return
        entry = touched.get(key)
        if entry is None:
            entry = touched[key] = (event.user_id, self._load(key))
        state = entry[1]
        source = SOURCE_REPARTITION if rec.topic == self.topics.repartition else SOURCE_EVENTS
        # The latency clock starts when the event was published (its Kafka timestamp), so
        # max_delay bounds publish -> job; but never before the user's last flush (which keeps
        # the rate bound of the trigger policy, also when catching up on a backlog) and never
        # after now (a producer clock running ahead).
        published = now if rec.timestamp_ms is None else rec.timestamp_ms
        seen = min(now, max(published, state.last_flush_ms))
        result = state.apply(
            event, seen_ms=seen, source=source, offset=rec.offset, limits=self.limits
        )
        if result.outcome is Applied.NEW:
            self.stats.events += 1
            self.stats.folded += result.folded
        elif result.outcome is Applied.DUPLICATE:
            self.stats.duplicates += 1
        else:
            self.stats.replays += 1

    async def _emit(self, due: list[_Due], now: int, *, check_active: bool) -> None:
        """Steps 2-4 of the module docstring for the due users (lock held)."""
        await self.sink.barrier()
        jobs = [d.state.build_job(d.user_id, now_ms=now, limits=self.limits) for d in due]
        deliveries = [
            await self.sink.send(self.topics.updates, d.key, job.to_json())
            for d, job in zip(due, jobs, strict=True)
        ]
        await asyncio.gather(*deliveries)
        for d, job in zip(due, jobs, strict=True):
            self.stats.jobs += 1
            self.stats.job_events += len(job.events)
            self.stats.flushes[d.reason] += 1
            if check_active and partition_for(d.key, self.partitions) not in self.active:
                continue  # revoked meanwhile: the new owner re-emits, same numbers
            d.state.mark_flushed(job.seq, now_ms=now)
            # Lazy: if this write is lost, a restart re-emits these events with the same
            # numbers (harmless); usually the user's next batch carries it to the changelog.
            self._save(d.key, d.state, lazy=True)

    # -- the timer's side ---------------------------------------------------------------------

    def _schedule(self, key: bytes, state: UserState) -> None:
        due = self.policy.next_check_ms(state.view())
        if due is None:
            return
        current = self._scheduled.get(key)
        if current is None or due < current:
            self._scheduled[key] = due
            heapq.heappush(self._heap, (due, key))

    async def flush_due(self) -> int:
        """Flush every owned user whose trigger fires now (the timer); return how many."""
        if not self._heap or self._heap[0][0] > self._now_ms():
            return 0
        async with self.lock:
            now = self._now_ms()
            due: list[_Due] = []
            while self._heap and self._heap[0][0] <= now:
                when, key = heapq.heappop(self._heap)
                if self._scheduled.get(key) != when:
                    continue  # superseded by an earlier schedule, already handled
                del self._scheduled[key]
                if partition_for(key, self.partitions) not in self.active:
                    continue
                state = self._hot.get(key)
                if state is None:
                    continue  # nothing pending (flushed since it was scheduled)
                reason = self.policy.decide(state.view(), now)
                if reason is None:
                    self._schedule(key, state)
                else:
                    due.append(_Due(key, key.decode(), state, reason))
            if due:
                await self._emit(due, now, check_active=True)
            return len(due)

    # -- rebalancing ----------------------------------------------------------------------------

    def on_assigned(self, partitions: Iterable[int]) -> None:
        """After recovery: own ``partitions``, and re-arm the timer for their pending users."""
        self.active = set(partitions)
        self._heap.clear()
        self._scheduled.clear()
        self._hot.clear()
        for key, raw in self.store.items():
            if has_pending(raw) and partition_for(key, self.partitions) in self.active:
                state = self._hot[key] = UserState.from_bytes(raw)
                self._schedule(key, state)

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
            self._hot.clear()
            await self.store.write_back_lazy()
            await self.sink.barrier()


# ---------------------------------------------------------------------------------------------
# faust wiring


async def _ensure_topics(
    kafka: KafkaSettings, topics: TopicSettings, repartition: str, changelog: str
) -> int:
    """Create missing topics; return the events topic's partition count (the table's).

    The repartition topic and the changelog must have exactly as many partitions as the events
    topic: a user's state lives in partition ``murmur2(user_id) % N`` of all three.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

    from streams.topics import ensure_topics, unreachable

    await ensure_topics(kafka, topics)
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        raise unreachable(kafka, exc) from exc
    try:
        existing = set(await admin.list_topics())

        async def count(name: str) -> int:
            (meta,) = await admin.describe_topics([name])
            return len(meta["partitions"])

        partitions = await count(topics.events)
        if repartition not in existing:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(repartition, partitions, topics.replication_factor)]
                )
        for name in (repartition, changelog):
            if name in existing and (n := await count(name)) != partitions:
                raise PartitionMismatch(
                    f"topic {name} has {n} partitions but {topics.events} has {partitions}; "
                    "per-user stream state is partitioned like the events topic"
                )
        return partitions
    finally:
        await admin.close()


class PartitionMismatch(RuntimeError):
    """The events topic was re-partitioned after stream state was built (one line for the CLI)."""


class StreamWorker:
    """The faust app, its table, agent and timer around one :class:`StreamProcessor`."""

    def __init__(
        self,
        settings: StreamSettings,
        *,
        kafka: KafkaSettings,
        partitions: int,
        topics: Topics = Topics(),
        replication_factor: int = 1,
        rules: EventRules = DEFAULT_RULES,
        sink: Sink | None = None,
    ) -> None:
        import faust

        self.settings = settings
        self.topics = topics
        self.app = app = faust.App(
            settings.app_id,
            broker=[f"kafka://{h.strip()}" for h in kafka.bootstrap.split(",") if h.strip()],
            broker_client_id=kafka.client_id,
            broker_credentials=_credentials(kafka),
            # faust refuses a request timeout below the session timeout.
            broker_request_timeout=max(kafka.request_timeout_s, settings.session_timeout_s),
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=min(3.0, settings.session_timeout_s / 10),
            store="memory://",
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
        )
        self.table = _user_state_table(app, partitions)
        sink = sink if sink is not None else _ProducerSink(app)
        self.processor = StreamProcessor(
            store=_TableStore(self.table, sink, partitions),
            sink=sink,
            partitions=partitions,
            policy=settings.trigger_policy(),
            limits=settings.state_limits(),
            rules=rules,
            topics=topics,
        )
        channel = app.topic(
            topics.events, topics.repartition, key_type=bytes, value_type=bytes, acks=True
        )
        self.agent = app.agent(channel, name="interest-stream-events")(self._agent)
        app.task(self._timer)
        self.table.on_recover(self._on_recover)
        app.on_partitions_revoked.connect(self._on_revoked)
        app.on_before_shutdown.connect(self._on_shutdown)

    async def _agent(self, stream: Any) -> None:
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
                if not batch:
                    continue
                records = [
                    Record(
                        topic=e.message.topic,
                        partition=e.message.partition,
                        offset=e.message.offset,
                        key=e.message.key,
                        value=e.message.value,
                        timestamp_ms=int(e.message.timestamp * 1000)
                        if e.message.timestamp
                        else None,
                    )
                    for e in batch
                ]
                try:
                    await self.processor.process_batch(records)
                except Exception as exc:
                    # Infrastructure failure (job delivery, corrupt state): stop without acking,
                    # so the batch is replayed by whoever owns these partitions next.
                    log.critical("stream batch failed, stopping the worker: %r", exc)
                    await self.app.crash(exc)
                    break
                for e in batch:
                    await manual.ack(e)
            # Crashed: park until faust cancels the agent (a returning agent would be
            # restarted by its supervisor).
            await asyncio.Event().wait()
        finally:
            feeder.cancel()

    async def _timer(self) -> None:
        """Flush idle users on time (a plain loop: mode's timers warn on every slow tick)."""
        last_log = time.monotonic()
        s = self.settings
        # Lazy writes come at the flush rate; send up to 4x that rate, in small chunks.
        chunk = max(100, int(4 * s.timer_interval_s * 10_000))
        while True:
            await asyncio.sleep(self.settings.timer_interval_s)
            if time.monotonic() - last_log >= self.settings.stats_interval_s:
                last_log = time.monotonic()
                log.info("stream worker stats: %s", self.processor.stats)
            try:
                await self.processor.persist(s.persist_interval_s, chunk)
                await self.processor.flush_due()
            except Exception as exc:
                log.critical("timer flush failed, stopping the worker: %r", exc)
                await self.app.crash(exc)
                return

    async def _on_recover(self) -> None:
        actives = self.app.assignor.assigned_actives()
        owned = {tp.partition for tp in actives if tp.topic == self.topics.events}
        self.processor.on_assigned(owned)
        log.info("stream worker owns partitions %s", sorted(owned))

    async def _on_revoked(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await self.processor.on_revoked()

    async def _on_shutdown(self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        await self.processor.persist()  # faust flushes the producer right after this


async def _collect(
    queue: asyncio.Queue[Any], max_: int, within: float, feeder: asyncio.Future[None]
) -> list[Any]:
    """Up to ``max_`` queued events: wait (bounded) for the first, then at most ``within``."""
    try:
        first = await asyncio.wait_for(queue.get(), timeout=1.0)
    except TimeoutError:
        if feeder.done():
            feeder.result()  # re-raise the stream's error
            raise RuntimeError("the stream feeding the stream worker ended") from None
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


def _user_state_table(app: Any, partitions: int) -> Any:
    """The per-user state table, written from the agent and the timer (see (b) above)."""
    import faust

    class UserStateTable(faust.Table[bytes, bytes]):
        def partition_for_key(self, key: Any) -> int:
            return partition_for(bytes(key), partitions)

    table = UserStateTable(
        app,
        name="user-state",
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        beacon=app.tables.beacon,
        help="interest-stream per-user stream state (streams.userstate)",
        # A restart reads the whole changelog (about 7k records/s here): let compaction, which
        # never touches the active segment, start early so the log stays ~1 record per user.
        extra_topic_configs={
            "segment.bytes": str(16 * 2**20),
            "segment.ms": str(10 * 60 * 1000),
            "min.cleanable.dirty.ratio": "0.2",
        },
    )
    return app.tables.add(table)


class _TableStore:
    """The faust table's local store, with its changelog records sent straight to the producer.

    ``table[key] = value`` would go through faust's send_soon buffer and a background task,
    one awaited publish per write (``Table.on_key_set`` -> ``send_changelog``); this writes the
    same record (same topic, key, value, partition) in a tight loop instead. Nothing else of
    ``on_key_set`` applies to this table (no windows/TTL).
    """

    def __init__(self, table: Any, sink: Sink, partitions: int) -> None:
        self.table = table
        self.sink = sink
        self.partitions = partitions
        self._unsent: dict[bytes, bytes] = {}
        self._lazy: dict[bytes, tuple[bytes, float]] = {}  # oldest first

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.table.data.get(key)
        return value

    def set(self, key: bytes, value: bytes) -> None:
        self.table.data[key] = value
        self._unsent[key] = value  # only the latest value of a key needs to go out
        self._lazy.pop(key, None)

    def set_lazy(self, key: bytes, value: bytes) -> None:
        self.table.data[key] = value
        self._lazy.pop(key, None)
        self._lazy[key] = (value, time.monotonic())

    def lazy_due(self, max_age_s: float) -> bool:
        first = next(iter(self._lazy.values()), None)
        return first is not None and time.monotonic() - first[1] >= max_age_s

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        yield from list(self.table.data.items())

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
        topic = self.table.changelog_topic.get_topic_name()
        for key, value in unsent.items():
            await self.sink.send(topic, key, value, partition=partition_for(key, self.partitions))


class _ProducerSink:
    def __init__(self, app: Any) -> None:
        self.app = app

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
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


# ---------------------------------------------------------------------------------------------
# running


def _credentials(kafka: KafkaSettings) -> Any:
    """faust's form of the SASL/SSL settings in KafkaSettings (None for PLAINTEXT)."""
    import ssl

    import faust

    if kafka.sasl_mechanism:
        return faust.SASLCredentials(
            username=kafka.sasl_username,
            password=kafka.sasl_password,
            mechanism=kafka.sasl_mechanism,
            ssl_context=ssl.create_default_context()
            if kafka.security_protocol == "SASL_SSL"
            else None,
        )
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(ssl.create_default_context())
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
    import faust

    settings = settings or StreamSettings()
    kafka = kafka or KafkaSettings()
    topics = topics or TopicSettings()
    intake = intake or IntakeSettings()
    settings.faust_data_dir().mkdir(parents=True, exist_ok=True)
    changelog = f"{settings.app_id}-user-state-changelog"
    partitions = asyncio.run(_ensure_topics(kafka, topics, settings.repartition_topic, changelog))
    worker = StreamWorker(
        settings,
        kafka=kafka,
        partitions=partitions,
        topics=Topics(
            events=topics.events,
            updates=topics.updates,
            dlq=topics.dlq,
            repartition=settings.repartition_topic,
        ),
        replication_factor=topics.replication_factor,
        rules=intake.rules(),
    )

    class _Worker(faust.Worker):
        """faust's graceful stop on the first signal; a second one exits at once."""

        def _on_sigint(self) -> None:
            self._second_signal_exits(signal.SIGINT)
            super()._on_sigint()

        def _on_sigterm(self) -> None:
            self._second_signal_exits(signal.SIGTERM)
            super()._on_sigterm()

        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            # faust's terminal spinner sets the root logger to DEBUG (so it can spin on every
            # record): every aiokafka/faust debug record would be built, ~10 % of the CPU.
            self.spinner = None
            super().on_setup_root_logger(logger, level)

        def _second_signal_exits(self, signum: signal.Signals) -> None:
            if self._signal_stop_time is not None:
                log.warning("second %s while stopping: exiting now", signum.name)
                os._exit(128 + signum.value)

    asyncio.set_event_loop(asyncio.new_event_loop())
    faust_worker = _Worker(
        worker.app, loglevel=settings.loglevel, redirect_stdouts=False, quiet=True
    )
    try:
        faust_worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_stream_worker())
