"""faust-streaming's open upstream issues, checked one by one against this project's configuration
(../shared/notes/faust-upstream.md; docs/ARCHITECTURE.md, "faust's upstream issues"), and a
canary that fails when the installed faust or aiokafka differ from what the repairs in
streams.stream.faust_ordering were written against.

* #606 (concurrency > 1: a commit passes an event in flight): every agent has concurrency 1 --
  refused at start-up otherwise -- and with in-order acks faust never commits past one in flight.
* #316 (a failed commit still advances faust's committed offset): the broker's offset stays
  behind, never ahead -- a replay, which the restart protocol skips exactly.
* #596 (recovery gaps block commits for good) and #651 (recovery hangs on deleted changelog
  segments): tests/integration/test_recovery_window.py checks that the commits reach the log end
  after a recovery under load and that the changelogs are compact-only; the reset policy is
  checked here and at start-up.
* #502 (processed twice after a rebalance): the new owner of a partition re-reads what was not
  committed; the records already applied are recognised by their offsets and change nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from pathlib import Path
from typing import Any

import aiokafka
import faust
import pytest
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.consumer import Consumer as BaseConsumer
from faust.transport.consumer import ThreadDelegateConsumer
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st
from unit.streams.stream.test_app import TOPICS, Clock, FakeSink, FakeStore, processor, rec, value

from streams.settings import KafkaSettings
from streams.stream.app import StreamWorker, check_faust_contract
from streams.stream.faust_ordering import GaplessConsumer, OrderedRecovery
from streams.stream.settings import StreamSettings
from streams.stream.triggers import TriggerPolicy
from streams.stream.types import Topics
from streams.stream.userstate import UserState

#: The versions the repairs were written against (pinned in pyproject.toml: faust-streaming
#: 0.15.3, aiokafka 0.14.0).
FAUST_VERSION = "0.15.3"
AIOKAFKA_VERSION = "0.14.0"

#: sha256 (first 16 hex digits) of the source of each faust method that OrderedRecovery copies or
#: GaplessConsumer overrides or relies on, as installed with FAUST_VERSION. On a mismatch, re-read
#: the method against streams/stream/faust_ordering.py (and the issues above), then update here.
FAUST_SOURCES = {
    # OrderedRecovery.on_recovery_completed is a reordered copy of this one.
    (Recovery, "on_recovery_completed"): "6ef567acf072e46d",
    # OrderedTableManager.recovery builds an OrderedRecovery instead.
    (TableManager, "recovery"): "f0bf5de78b4c3d23",
    # GaplessConsumer's overrides.
    (ThreadDelegateConsumer, "_getmany"): "f9d47aa9010b5ff2",
    (BaseConsumer, "getmany"): "4b168d84882a70d6",
    (BaseConsumer, "seek"): "b86a9fe05f956b30",
    (ThreadDelegateConsumer, "seek_wait"): "e9db5bbc4ceb2543",
    (BaseConsumer, "perform_seek"): "0e8c130ff4b0afd8",
    (BaseConsumer, "on_partitions_revoked"): "d04b7ae72c6fc206",
    (BaseConsumer, "on_partitions_assigned"): "29ce96596f05a18c",
    # The commit logic the reasoning about #606, #316 and #596 rests on.
    (BaseConsumer, "_new_offset"): "1d2c7ea89a7ad4f1",
    (BaseConsumer, "_commit_offsets"): "1a69799041188441",
}

EVENTS = TP(TOPICS.events, 0)


def source_hash(owner: type, name: str) -> str:
    attr = inspect.getattr_static(owner, name)
    func = attr.fget if isinstance(attr, property) else attr
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()[:16]


def test_installed_faust_and_aiokafka_are_the_versions_the_repairs_were_written_against() -> None:
    assert faust.__version__ == FAUST_VERSION, "re-check streams/stream/faust_ordering.py"
    assert aiokafka.__version__ == AIOKAFKA_VERSION, "re-check streams/stream/faust_ordering.py"
    changed = {
        f"{owner.__name__}.{name}"
        for (owner, name), digest in FAUST_SOURCES.items()
        if source_hash(owner, name) != digest
    }
    assert not changed, f"faust changed {sorted(changed)}: re-check the repairs against them"


def test_the_repairs_override_what_the_canary_pins() -> None:
    """The pinned methods are the ones the repairs actually replace (a renamed faust method
    would leave an override that nobody calls)."""
    assert OrderedRecovery.on_recovery_completed is not Recovery.on_recovery_completed
    for name in ("_getmany", "getmany", "seek", "seek_wait", "perform_seek"):
        assert name in vars(GaplessConsumer) and hasattr(ThreadDelegateConsumer, name), name
    for name in ("on_partitions_revoked", "on_partitions_assigned"):
        assert name in vars(GaplessConsumer) and hasattr(BaseConsumer, name), name


@pytest.fixture
def worker(tmp_path: Path) -> StreamWorker:
    return StreamWorker(
        StreamSettings(app_id="test-contract", data_dir=tmp_path),
        kafka=KafkaSettings(bootstrap="127.0.0.1:1"),
        partitions=3,
        topics=Topics(items="test-contract.items"),
    )


def test_606_every_agent_runs_one_instance_and_start_up_refuses_more(worker: StreamWorker) -> None:
    app = worker.app
    assert {a.name.rsplit(".", 1)[-1]: a.concurrency for a in app.agents.values()} == {
        "interest-stream-events": 1,
        "interest-stream-items": 1,
    }
    check_faust_contract(app)  # what StreamWorker ran at start-up

    @app.agent(app.topic("elsewhere"), concurrency=2)
    async def parallel(stream: Any) -> None:  # pragma: no cover (never started)
        async for _ in stream:
            pass

    with pytest.raises(RuntimeError, match="concurrency > 1"):
        check_faust_contract(app)


@pytest.mark.filterwarnings("ignore::faust.exceptions.AlreadyConfiguredWarning")
def test_651_a_reset_starts_from_the_log_start(worker: StreamWorker) -> None:
    """A partition without a valid position (a deleted segment, no committed offset) is read from
    its start, never skipped to the end; the tables' changelogs are compacted, never deleted by
    retention (so their start does not move under a recovery)."""
    assert worker.app.conf.consumer_auto_offset_reset == "earliest"
    for table in (worker.table, worker.item_table):
        topic = table.changelog_topic
        assert topic.compacting and not topic.deleting and topic.retention is None
        assert "cleanup.policy" not in topic.config and "retention.ms" not in topic.config
    worker.app.conf.consumer_auto_offset_reset = "latest"
    with pytest.raises(RuntimeError, match="reset latest"):
        check_faust_contract(worker.app)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 20), min_size=1, max_size=12), st.data())
def test_606_in_order_acks_never_let_a_commit_pass_an_event_in_flight(
    batches: list[int], data: st.DataObject
) -> None:
    """The worker acks each batch's events after the batch, in offset order (one agent instance,
    one feeder): whatever faust commits in between stays at or below the first event in flight."""
    consumer = _consumer()
    offset = data.draw(st.integers(0, 3))  # where the partition's committed offset starts
    consumer._committed_offset[EVENTS] = offset or None
    for size in batches:
        for o in range(offset, offset + size):  # the batch, acked after it was processed
            consumer._acked[EVENTS].append(o)
            consumer._acked_index[EVENTS].add(o)
        offset += size  # the next batch is in flight
        if data.draw(st.booleans()):  # a commit tick
            new = consumer._new_offset(EVENTS)
            if new is not None:
                assert new <= offset, "committed past an event in flight"
                consumer._committed_offset[EVENTS] = new


def test_316_a_failed_commit_leaves_the_broker_behind_never_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    consumer = _consumer()
    sent: list[dict[TP, int]] = []
    results = iter([False, True])

    async def commit(offsets: Any) -> bool:
        sent.append(dict(offsets))
        return next(results)

    async def flush() -> None:
        pass

    monkeypatch.setattr(consumer, "_commit", commit)
    monkeypatch.setattr(consumer, "assignment", lambda: {EVENTS})
    monkeypatch.setattr(consumer.app.producer, "flush", flush)

    async def ack_and_commit(offsets: range) -> bool:
        for o in offsets:
            consumer._acked[EVENTS].append(o)
            consumer._acked_index[EVENTS].add(o)
        new = consumer._new_offset(EVENTS)
        assert new is not None
        return await consumer._commit_offsets({EVENTS: new})

    assert asyncio.run(ack_and_commit(range(0, 10))) is False  # the broker keeps its offset
    # faust believes 10 is committed (#316): it is not retried, but it is never passed either.
    assert consumer._committed_offset[EVENTS] == 10
    assert asyncio.run(ack_and_commit(range(10, 20))) is True
    assert sent == [{EVENTS: 10}, {EVENTS: 20}]  # each one past only what was acked


def test_502_records_re_read_after_a_rebalance_change_nothing() -> None:
    """The old owner applied a batch, wrote its state and sent its jobs but the commit did not
    happen before the partition moved: the new owner reads the batch again from the changelog
    state and the same records, and applies none of them twice."""
    store, clock = FakeStore(), Clock()
    every = TriggerPolicy(flush_count=1, min_interval_ms=0)
    old = processor(store, FakeSink(store), clock, policy=every)
    batch = [rec(i, value(f"e{i}")) for i in range(5)]
    asyncio.run(old.process_batch(batch))
    asyncio.run(old.on_revoked())  # writes everything before the hand-over
    store.flush()
    new_store = FakeStore(store.durable)  # the new owner's table, recovered from the changelog
    new_sink = FakeSink(new_store)
    new = processor(new_store, new_sink, clock, policy=every)
    asyncio.run(new.process_batch([*batch, rec(5, value("e5"))]))
    assert [(e.n, e.event_id) for j in new_sink.jobs for e in j.events] == [(6, "e5")]
    assert new.stats.replays == 5 and new.stats.events == 1
    assert UserState.from_bytes(new_store.live[b"u1"]).last_n == 6


def _consumer() -> GaplessConsumer:
    worker = StreamWorker(
        StreamSettings(app_id="test-contract-commit", data_dir=Path("/nonexistent")),
        kafka=KafkaSettings(bootstrap="127.0.0.1:1"),
        partitions=1,
    )
    consumer = worker.app.consumer
    assert isinstance(consumer, GaplessConsumer)
    return consumer
