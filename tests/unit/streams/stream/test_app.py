"""The stream worker's processor (fakes, crashes included) and its faust agent (test context)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts.dlq import DeadLetter
from streams.contracts.jobs import DeleteUserJob, UpdateJob, parse_job
from streams.settings import KafkaSettings
from streams.stream.app import StreamWorker, _collect
from streams.stream.processor import StreamProcessor
from streams.stream.settings import StreamSettings
from streams.stream.triggers import TriggerPolicy
from streams.stream.types import Headers, Record, Topics, partition_for
from streams.stream.userstate import StateLimits, UserState

T0 = 1_795_000_000_000
TOPICS = Topics()


class Crash(Exception):
    """Stands for kill -9 at the point it is raised."""


class FakeStore:
    """A changelog-backed table: writes become durable in order, at a barrier (or partly, at a
    crash)."""

    def __init__(self, durable: dict[bytes, bytes] | None = None) -> None:
        self.durable = dict(durable or {})
        self.live = dict(self.durable)
        self.unflushed: list[tuple[bytes, bytes]] = []
        self.lazy: dict[bytes, bytes] = {}
        self.log: list[tuple[str, Any]] = []

    def get(self, key: bytes) -> bytes | None:
        return self.live.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        self.live[key] = value
        self.unflushed.append((key, value))
        self.lazy.pop(key, None)
        self.log.append(("set", UserState.from_bytes(value)))

    def set_lazy(self, key: bytes, value: bytes) -> None:
        self.live[key] = value
        self.lazy[key] = value
        self.log.append(("set_lazy", UserState.from_bytes(value)))

    def lazy_due(self, max_age_s: float) -> bool:
        return bool(self.lazy)

    async def write_back_lazy(self, max_age_s: float = 0.0, limit: int | None = None) -> None:
        for key in list(self.lazy)[:limit]:
            self.unflushed.append((key, self.lazy.pop(key)))

    def settle(self) -> None:
        pass  # writes are durable at a barrier here (flush)

    def items(self, partitions: object = None) -> Iterator[tuple[bytes, bytes]]:
        yield from list(self.live.items())  # all: the processor keeps its own partitions

    def scan(self, partition: int, after: bytes | None, limit: int) -> list[tuple[bytes, bytes]]:
        keys = sorted(k for k in self.live if after is None or k > after)  # one partition
        return [(k, self.live[k]) for k in keys[:limit]]

    async def write_back(self) -> None:
        self.log.append(("write_back", None))

    def flush(self, upto: int | None = None) -> None:
        done = self.unflushed if upto is None else self.unflushed[:upto]
        self.durable.update(done)
        self.unflushed = [] if upto is None else self.unflushed[upto:]


class FakeSink:
    def __init__(self, store: FakeStore, *, crash_at_job: int | None = None) -> None:
        self.store = store
        self.crash_at_job = crash_at_job
        self.jobs: list[UpdateJob] = []
        #: Everything sent to the updates topic in order: update and delete jobs.
        self.sent: list[UpdateJob | DeleteUserJob] = []
        self.other: list[tuple[str, bytes | None, bytes, int | None, Headers | None]] = []

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Headers | None = None,
    ) -> asyncio.Future[SimpleNamespace]:
        fut: asyncio.Future[SimpleNamespace] = asyncio.get_running_loop().create_future()
        if topic == TOPICS.updates:
            job = parse_job(value)
            self.sent.append(job)
            self.store.log.append(("job", job))
            if isinstance(job, UpdateJob):
                self.jobs.append(job)
            if self.crash_at_job == len(self.jobs):
                fut.set_exception(Crash())  # delivered, then the process died
                return fut
        else:
            self.other.append((topic, key, value, partition, headers))
        fut.set_result(SimpleNamespace(offset=len(self.jobs) + len(self.other)))  # metadata
        return fut

    async def barrier(self) -> None:
        self.store.log.append(("barrier", None))
        self.store.flush()


class Clock:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def processor(
    store: FakeStore,
    sink: FakeSink,
    clock: Clock,
    *,
    partitions: int = 1,
    policy: TriggerPolicy | None = None,
    limits: StateLimits | None = None,
) -> StreamProcessor:
    p = StreamProcessor(
        store=store,
        sink=sink,
        partitions=partitions,
        policy=policy or TriggerPolicy(flush_count=3, min_interval_ms=0),
        limits=limits or StateLimits(dedupe_window=64),
        topics=TOPICS,
        clock=clock,
    )
    p.on_assigned(range(partitions))
    return p


def value(eid: str, user: str = "u1", type_: str = "click", ts: int = T0) -> bytes:
    return json.dumps(
        {"event_id": eid, "user_id": user, "type": type_, "ts": ts, "text": f"t {eid}"}
    ).encode()


def rec(offset: int, raw: bytes, *, partition: int = 0, key: bytes | None = b"u1") -> Record:
    return Record(TOPICS.events, partition, offset, key, raw)


def test_job_leaves_only_after_its_numbering_is_durable() -> None:
    store, clock = FakeStore(), Clock()
    sink = FakeSink(store)
    p = processor(store, sink, clock)
    asyncio.run(p.process_batch([rec(i, value(f"e{i}")) for i in range(3)]))
    kinds = [k for k, _ in store.log if k != "write_back"]
    assert kinds == ["set", "barrier", "job", "set_lazy"]
    first = store.log[0][1]
    assert isinstance(first, UserState) and [e.n for e in first.pending] == [1, 2, 3]
    (job,) = sink.jobs
    assert job.seq == 3 and [e.event_id for e in job.events] == ["e0", "e1", "e2"]
    last = UserState.from_bytes(store.live[b"u1"])
    assert not last.pending and last.last_n == 3 and last.offsets[0] == 2


def test_bad_input_goes_to_the_dlq_with_reason_and_source() -> None:
    store, clock = FakeStore(), Clock()
    sink = FakeSink(store)
    p = processor(store, sink, clock)
    far_future = value("e1", ts=T0 + 3_600_000)
    asyncio.run(p.process_batch([rec(7, b"{not json"), rec(8, far_future), rec(9, None)]))  # type: ignore[arg-type]
    letters = [DeadLetter.from_record(k, v, h or []) for t, k, v, _, h in sink.other]
    assert [t for t, *_ in sink.other] == [TOPICS.dlq] * 3
    assert [d.reason for d in letters] == ["not_json", "future_timestamp", "not_json"]
    assert letters[0].value == b"{not json" and letters[0].key == b"u1"
    assert letters[1].source == f"{TOPICS.events}/0/8" and letters[1].stage == "stream"
    assert p.stats.dlq == {"not_json": 2, "future_timestamp": 1}
    assert not sink.jobs and not store.live


def test_records_outside_their_users_partition_are_rekeyed() -> None:
    store, clock = FakeStore(), Clock()
    sink = FakeSink(store)
    p = processor(store, sink, clock, partitions=8)
    home = partition_for(b"u1", 8)
    away = (home + 1) % 8
    asyncio.run(p.process_batch([rec(0, value("e1"), partition=away, key=None)]))
    ((topic, key, raw, partition, headers),) = sink.other
    assert (topic, key, raw, partition) == (TOPICS.repartition, b"u1", value("e1"), home)
    assert headers == [("forwarded_from", f"{TOPICS.events}:{away}:0".encode())]
    assert not store.live and p.stats.forwarded == 1
    # On the repartition topic, in its home partition, it is applied (offsets per source).
    forwarded = Record(TOPICS.repartition, home, 0, b"u1", value("e1"))
    asyncio.run(p.process_batch([forwarded]))
    assert UserState.from_bytes(store.live[b"u1"]).offsets == [-1, 0]


def test_duplicates_and_replays_get_no_number() -> None:
    store, clock = FakeStore(), Clock()
    sink = FakeSink(store)
    p = processor(store, sink, clock, policy=TriggerPolicy(flush_count=100))
    asyncio.run(p.process_batch([rec(0, value("a")), rec(1, value("a")), rec(2, value("b"))]))
    asyncio.run(p.process_batch([rec(1, value("a")), rec(2, value("b")), rec(3, value("c"))]))
    state = UserState.from_bytes(store.live[b"u1"])
    assert [(e.n, e.event_id) for e in state.pending] == [(1, "a"), (2, "b"), (3, "c")]
    assert (p.stats.events, p.stats.duplicates, p.stats.replays) == (3, 1, 2)


def test_idle_users_keep_their_numbering_and_lose_the_rest_after_the_horizon() -> None:
    store, clock = FakeStore(), Clock()
    sink = FakeSink(store)
    p = processor(store, sink, clock, policy=TriggerPolicy(flush_count=1, min_interval_ms=0))
    day = 86_400_000
    asyncio.run(p.process_batch([rec(0, value("a")), rec(1, value("b"))]))  # u1: flushed
    clock.ms += day
    asyncio.run(p.process_batch([rec(0, value("x", user="u2"), key=b"u2")]))  # u2: a day later
    big = len(store.live[b"u1"])
    # One user per sweep step: u1 (flushed a day ago) shrinks, u2 (just now) is left alone.
    assert asyncio.run(p.compact_idle(day, limit=1)) == 1
    assert asyncio.run(p.compact_idle(day, limit=1)) == 0
    u1 = UserState.from_bytes(store.live[b"u1"])
    assert (u1.last_n, u1.offsets[0], u1.recent, u1.activity) == (2, 1, b"", {})
    assert len(store.live[b"u1"]) < big / 2 and UserState.from_bytes(store.live[b"u2"]).recent
    assert p.stats.compacted == 1
    # Numbering and replay offsets go on; a duplicate of "a" is past the dedupe horizon.
    asyncio.run(p.process_batch([rec(1, value("b")), rec(2, value("a")), rec(3, value("c"))]))
    assert [(e.n, e.event_id) for e in sink.jobs[-1].events] == [(3, "a"), (4, "c")]
    assert p.stats.replays == 1
    # Within the horizon duplicates are still recognised.
    asyncio.run(p.process_batch([rec(1, value("x", user="u2"), key=b"u2")]))
    assert p.stats.duplicates == 1


def test_timer_flushes_idle_users_it_owns() -> None:
    store, clock = FakeStore(), Clock()
    sink = FakeSink(store)
    policy = TriggerPolicy(flush_count=100, max_delay_ms=1000, slack_ms=100)
    p = processor(store, sink, clock, partitions=4, policy=policy)
    users = ["u1", "u2", "u3", "u4", "u5", "u6"]
    records = [
        Record(TOPICS.events, partition_for(u.encode(), 4), i, u.encode(), value(f"e{i}", user=u))
        for i, u in enumerate(users)
    ]
    asyncio.run(p.process_batch(records))
    assert not sink.jobs
    clock.ms += 899
    assert asyncio.run(p.flush_due()) == 0
    lost = partition_for(b"u1", 4)
    p.active.discard(lost)  # revoked: another worker flushes these users
    clock.ms += 1
    flushed = asyncio.run(p.flush_due())
    owned = [u for u in users if partition_for(u.encode(), 4) != lost]
    assert flushed == len(owned) and sorted(j.user_id for j in sink.jobs) == sorted(owned)
    assert all(not UserState.from_bytes(store.live[u.encode()]).pending for u in owned)
    assert asyncio.run(p.flush_due()) == 0
    # A new owner (recovery) re-arms the timer from the table.
    p.on_assigned([lost])
    clock.ms += 1
    assert asyncio.run(p.flush_due()) == len(users) - len(owned)


def test_failed_delivery_keeps_the_events_pending_with_their_numbers() -> None:
    store, clock = FakeStore(), Clock()
    sink = FakeSink(store, crash_at_job=1)
    p = processor(store, sink, clock)
    with pytest.raises(Crash):
        asyncio.run(p.process_batch([rec(i, value(f"e{i}")) for i in range(3)]))
    # Restart from the durable table: the replayed records are skipped, the job re-emitted.
    store2 = FakeStore(store.durable)
    sink2 = FakeSink(store2)
    p2 = processor(store2, sink2, clock)
    asyncio.run(p2.process_batch([rec(i, value(f"e{i}")) for i in range(3)]))
    clock.ms += 10_000
    asyncio.run(p2.flush_due())
    assert [e.n for e in sink2.jobs[0].events] == [1, 2, 3] == [e.n for e in sink.jobs[0].events]
    assert p2.stats.replays == 3


Item = tuple[str, str, bool]  # user, event_id, borderline (future at first, valid on restart)


def test_numbers_survive_a_restart_that_validates_differently() -> None:
    """A job is delivered, then the worker dies before its state write is durable; on restart an
    event that was rejected before would now be accepted (clock moved on, or a config change).
    The delivered numbers must still mean the same events: they were durable before the job left,
    with the offsets they cover (the rejected record stays rejected: it is in the DLQ)."""
    clock = Clock()
    store = FakeStore()
    sink = FakeSink(store, crash_at_job=1)
    late = value("x", ts=T0 + 360_000)  # 6 min ahead: DLQ now, valid in 10 minutes
    records = [rec(0, late), *(rec(i, value(f"e{i}")) for i in (1, 2, 3))]
    with pytest.raises(Crash):
        asyncio.run(processor(store, sink, clock).process_batch(records))
    store.flush(0)  # only what the barrier made durable survives
    clock.ms += 600_000
    store2 = FakeStore(store.durable)
    sink2 = FakeSink(store2)
    p2 = processor(store2, sink2, clock)
    asyncio.run(p2.process_batch(records))
    clock.ms += 10_000
    asyncio.run(p2.flush_due())
    numbers = {(e.n, e.event_id) for j in sink.jobs + sink2.jobs for e in j.events}
    assert numbers == {(1, "e1"), (2, "e2"), (3, "e3")}
    assert p2.stats.replays == 4


@st.composite
def workloads(draw: st.DrawFn) -> tuple[list[Item], list[int], int | None, int, int]:
    users = [f"u{i}" for i in range(draw(st.integers(1, 5)))]
    items: list[Item] = []
    for i in range(draw(st.integers(1, 60))):
        if items and draw(st.integers(0, 5)) == 0:
            items.append(draw(st.sampled_from(items)))  # an at-least-once duplicate
        else:
            items.append((draw(st.sampled_from(users)), f"e{i}", draw(st.integers(0, 6)) == 0))
    cuts = sorted(draw(st.lists(st.integers(1, len(items)), max_size=6, unique=True)))
    crash_at_job = draw(st.one_of(st.none(), st.integers(1, 12)))
    crash_batch = draw(st.integers(0, len(cuts)))
    durable_prefix = draw(st.integers(0, 20))
    return items, cuts, crash_at_job, crash_batch, durable_prefix


@settings(max_examples=200, deadline=None)
@given(workloads(), st.integers(0, 3))
def test_kill_and_restart_loses_nothing_and_never_renumbers(
    workload: tuple[list[Item], list[int], int | None, int, int], commit_every: int
) -> None:
    """Model of kill -9: writes not yet flushed are lost except a prefix, offsets are committed
    only after a producer flush. Some events are "borderline": more than 5 min in the future at
    first (DLQ), valid when replayed after the restart -- so a replay is *not* a repetition of
    the first run, as after a config change. The union of all jobs covers the input, and every
    (user, n) means the same event in every job, and every event keeps its n."""
    items, cuts, crash_at_job, crash_batch, durable_prefix = workload
    future = T0 + 300_000 + 60_000
    records = [
        rec(i, value(e, user=u, ts=future if late else T0), key=u.encode())
        for i, (u, e, late) in enumerate(items)
    ]
    batches = [records[a:b] for a, b in zip([0, *cuts], [*cuts, len(records)], strict=True)]
    batches = [b for b in batches if b]
    clock = Clock()
    store = FakeStore()
    sink = FakeSink(store, crash_at_job=crash_at_job)
    committed = 0

    async def first_run() -> None:
        nonlocal committed
        p = processor(store, sink, clock)
        for i, batch in enumerate(batches):
            clock.ms += 300
            if i == crash_batch:
                raise Crash()
            await p.process_batch(batch)
            await p.flush_due()
            if commit_every and i % commit_every == 0:
                if i % 2:
                    await p.persist()  # the periodic write of lazily kept states
                await sink.barrier()  # faust: producer.flush(), then commit
                committed = batch[-1].offset + 1

    with contextlib.suppress(Crash):
        asyncio.run(first_run())
    store.flush(durable_prefix)

    clock.ms += 600_000
    store2 = FakeStore(store.durable)
    sink2 = FakeSink(store2)

    async def second_run() -> None:
        p = processor(store2, sink2, clock)
        rest = records[committed:]
        for i in range(0, len(rest), 7):
            clock.ms += 300
            await p.process_batch(rest[i : i + 7])
        clock.ms += 10_000
        await p.flush_due()

    asyncio.run(second_run())

    by_n: dict[tuple[str, int], str] = {}
    by_id: dict[tuple[str, str], int] = {}
    for job in sink.jobs + sink2.jobs:
        for e in job.events:
            assert by_n.setdefault((job.user_id, e.n), e.event_id) == e.event_id
            assert by_id.setdefault((job.user_id, e.event_id), e.n) == e.n
    always_valid = {(u, e) for u, e, late in items if not late}
    assert always_valid <= set(by_id) <= {(u, e) for u, e, _ in items}
    for user in {u for u, _, _ in items}:  # in order (a borderline one may come later)
        ordered = [e for (u, _), e in sorted(by_n.items()) if u == user and (u, e) in always_valid]
        assert ordered == list(dict.fromkeys(e for u, e, late in items if u == user and not late))


class _AgentSink(FakeSink):
    def __init__(self) -> None:
        super().__init__(FakeStore())


def test_faust_agent_in_test_context(tmp_path: Path) -> None:
    """The real faust agent and table, fed through faust's agent test context."""
    sink = _AgentSink()
    settings_ = StreamSettings(
        app_id="test-stream-agent", flush_count=2, min_interval_s=0, data_dir=tmp_path
    )
    worker = StreamWorker(
        settings_, kafka=KafkaSettings(bootstrap="127.0.0.1:1"), partitions=1, sink=sink
    )
    worker.processor.on_assigned([0])

    async def run() -> None:
        async with worker.agent.test_context() as agent:
            now = int(worker.processor.clock() * 1000)
            for i in (0, 1, 1, 2):
                await agent.put(value(f"e{i}", ts=now), key=b"u1")
            await agent.put(b"[1, 2]", key=b"u1")
            for _ in range(100):
                if sink.jobs and any(t == TOPICS.dlq for t, *_ in sink.other):
                    break
                await asyncio.sleep(0.02)

    asyncio.run(run())
    (job,) = sink.jobs
    assert [(e.n, e.event_id) for e in job.events] == [(1, "e0"), (2, "e1"), (3, "e2")]
    assert job.activity["60000"] == {"click": 3}
    ((_topic, _key, raw, _p, headers),) = [o for o in sink.other if o[0] == TOPICS.dlq]
    assert raw == b"[1, 2]"
    changelog = [o for o in sink.other if o[0] == "test-stream-agent-user-state-changelog"]
    # The numbered state went to the changelog before the job; the flushed one follows lazily.
    assert UserState.from_bytes(changelog[-1][2]).last_n == 3
    assert DeadLetter.from_record(b"u1", raw, headers or []).reason == "not_object"
    state = UserState.from_bytes(worker.processor.store.get(b"u1") or b"")
    assert state.last_n == 3 and not state.pending and worker.processor.stats.duplicates == 1
    # The local store (RocksDB by default) is written behind the changelog: it holds the
    # delivered, numbered state; the flushed one waits for its lazy changelog write.
    local = UserState.from_bytes(worker.table.data._db_for_partition(0).get(b"u1"))
    assert local.last_n == 3 and len(local.pending) == 3


def test_metrics_server_serves_counters_and_health_and_survives_a_busy_port(
    tmp_path: Path,
) -> None:
    """``/metrics`` and ``/healthz`` of a worker that has not joined its group yet; a port in
    use leaves the worker running without them."""
    import socket
    import urllib.error
    import urllib.request

    def get(url: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def worker(port: int) -> StreamWorker:
        s = StreamSettings(app_id="test-metrics", data_dir=tmp_path, metrics_port=port)
        return StreamWorker(s, kafka=KafkaSettings(bootstrap="127.0.0.1:1"), partitions=1)

    async def run() -> None:
        w = worker(0)
        await w.start_metrics()
        assert w.metrics_server is not None
        base = f"http://127.0.0.1:{w.metrics_server.port}"
        loop = asyncio.get_running_loop()
        status, body = await loop.run_in_executor(None, get, f"{base}/healthz")
        assert status == 503 and json.loads(body)["status"] == "starting"
        w.processor.stats.dlq["not_json"] += 2
        w.state = "consuming"
        w.metrics.consuming.set(1)
        status, body = await loop.run_in_executor(None, get, f"{base}/healthz")
        assert status == 200 and json.loads(body)["consuming"] is True
        status, body = await loop.run_in_executor(None, get, f"{base}/metrics")
        text = body.decode()
        assert status == 200
        assert 'interest_stream_dlq_total{reason="not_json"} 2.0' in text
        assert "interest_stream_events_total 0.0" in text
        assert "interest_worker_consuming 1.0" in text
        assert "interest_consumer_lag_read_ok 0.0" in text  # no broker here: no lag series
        await w.stop_metrics()

        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            w2 = worker(busy.getsockname()[1])
            await w2.start_metrics()  # logged, not raised
            assert w2.metrics_server is None
            await w2.stop_metrics()

    asyncio.run(run())


class _SlowSink(FakeSink):
    """Each flush's producer barrier takes ``delay_ms`` (a busy broker or machine)."""

    def __init__(self, store: FakeStore, clock: Clock, delay_ms: int) -> None:
        super().__init__(store)
        self.clock, self.delay_ms = clock, delay_ms
        self.delivered: list[int] = []

    async def barrier(self) -> None:
        self.clock.ms += self.delay_ms
        await super().barrier()

    async def send(self, topic: str, key: bytes | None, value: bytes, **kw: Any) -> Any:
        if topic == TOPICS.updates:
            self.delivered.append(self.clock.ms)
        return await super().send(topic, key, value, **kw)


def test_a_worker_whose_flushes_land_late_learns_to_flush_earlier() -> None:
    """Flushes that take 300 ms to deliver: the first single-event job lands past max_delay, then
    the worker flushes on age earlier (streams.stream.triggers.FlushLead) and every later one
    fits."""
    store, clock = FakeStore(), Clock()
    sink = _SlowSink(store, clock, delay_ms=300)
    policy = TriggerPolicy(flush_count=100, max_delay_ms=1000, slack_ms=100)
    p = processor(store, sink, clock, policy=policy)
    latencies = []
    for i in range(12):
        clock.ms += 1_000 + 17 * i  # ticks land at every phase of the timer
        published = clock.ms
        raw = value(f"e{i}", ts=published)
        asyncio.run(p.process_batch([Record(TOPICS.events, 0, i, b"u1", raw, published)]))
        while len(sink.jobs) == i:
            clock.ms += 50  # the timer's tick
            asyncio.run(p.flush_due())
        latencies.append(sink.delivered[-1] - published)
    assert latencies[0] > policy.max_delay_ms
    assert max(latencies[1:]) <= policy.max_delay_ms, latencies
    assert p.lead.get() >= 300 - policy.slack_ms


def test_a_backlog_does_not_make_the_worker_flush_early() -> None:
    """Events that were due before they arrived (a worker catching up) are flushed at once and
    teach the lead nothing: the next user still waits the full age."""
    store, clock = FakeStore(), Clock()
    sink = FakeSink(store)
    policy = TriggerPolicy(flush_count=100, max_delay_ms=1000, slack_ms=100)
    p = processor(store, sink, clock, policy=policy)
    old = clock.ms - 60_000
    backlog = [
        Record(TOPICS.events, 0, i, f"b{i}".encode(), value(f"e{i}", user=f"b{i}", ts=old), old)
        for i in range(20)
    ]
    asyncio.run(p.process_batch(backlog))
    assert len(sink.jobs) == 20 and p.lead.get() == 0
    fresh = clock.ms
    raw = value("f", user="u1", ts=fresh)
    asyncio.run(p.process_batch([Record(TOPICS.events, 0, 20, b"u1", raw, fresh)]))
    clock.ms += policy.age_ms - 1
    assert asyncio.run(p.flush_due()) == 0
    clock.ms += 1
    assert asyncio.run(p.flush_due()) == 1 and p.lead.get() == 0


def test_collect_says_when_the_feeding_stream_has_ended() -> None:
    """A stream faust ended (the worker stopping) gives None once its events are taken -- the
    agent then parks instead of crashing mid-stop -- and a stream's error is raised."""

    async def run() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        ended.set_result(None)
        queue.put_nowait(1)
        assert await _collect(queue, 10, 0.01, ended) == [1]
        assert await _collect(queue, 10, 0.01, ended) is None
        failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        failed.set_exception(OSError("broker gone"))
        with pytest.raises(OSError, match="broker gone"):
            await _collect(queue, 10, 0.01, failed)

    asyncio.run(run())
