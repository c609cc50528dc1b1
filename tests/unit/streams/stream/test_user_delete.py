"""Forgetting a user in the stream worker's core: the delete request read in order with the
user's events, its state deleted before the delete job leaves, later events numbered afresh."""

from __future__ import annotations

import asyncio
import json

from unit.streams.stream.test_app import (
    T0,
    TOPICS,
    Clock,
    FakeSink,
    FakeStore,
    processor,
    rec,
    value,
)

from streams.contracts.control import CONTROL_HEADER, delete_user_record
from streams.contracts.dlq import DeadLetter
from streams.contracts.jobs import DeleteUserJob, UpdateJob
from streams.stream.triggers import TriggerPolicy
from streams.stream.types import Record, partition_for
from streams.stream.userstate import UserState


class Store(FakeStore):
    """The fake changelog table, with deletes (a tombstone, durable at the next barrier)."""

    def delete(self, key: bytes) -> None:
        self.live.pop(key, None)
        self.lazy.pop(key, None)
        self.unflushed.append((key, b""))
        self.log.append(("delete", key))

    def flush(self, upto: int | None = None) -> None:
        super().flush(upto)
        for key in [k for k, v in self.durable.items() if v == b""]:
            del self.durable[key]


def delete_rec(offset: int, user: str = "u1", *, partition: int = 0) -> Record:
    key, raw, headers = delete_user_record(user, now_ms=T0, by="test")
    return Record(TOPICS.events, partition, offset, key, raw, headers=headers)


def summary(sent: list[UpdateJob | DeleteUserJob]) -> list[object]:
    return [
        ("delete", j.user_id)
        if isinstance(j, DeleteUserJob)
        else (j.user_id, [e.event_id for e in j.events], [e.n for e in j.events])
        for j in sent
    ]


def test_a_delete_forgets_what_came_before_and_later_events_start_afresh() -> None:
    store, clock = Store(), Clock()
    sink = FakeSink(store)
    p = processor(store, sink, clock, policy=TriggerPolicy(flush_count=3, min_interval_ms=0))
    # A flushed job, then two pending events, then the request, then a new event; u2 untouched.
    asyncio.run(p.process_batch([rec(i, value(f"e{i}")) for i in range(3)]))
    batch = [
        rec(3, value("e3")),
        rec(4, value("x1", user="u2"), key=b"u2"),
        rec(5, value("e4")),
        delete_rec(6),
        rec(7, value("new1")),
    ]
    asyncio.run(p.process_batch(batch))
    assert summary(sink.sent) == [("u1", ["e0", "e1", "e2"], [1, 2, 3]), ("delete", "u1")]
    state = UserState.from_bytes(store.live[b"u1"])
    assert [(e.event_id, e.n) for e in state.pending] == [("new1", 1)]
    assert [(e.event_id, e.n) for e in UserState.from_bytes(store.live[b"u2"]).pending] == [
        ("x1", 1)
    ]
    # The tombstone is durable before the delete job leaves (as any job's state is).
    kinds = [k for k, _ in store.log]
    assert kinds.index("delete") < kinds.index("barrier", kinds.index("delete")) < len(kinds)
    last_barrier = max(i for i, k in enumerate(kinds) if k == "barrier")
    delete_job = next(i for i, (k, j) in enumerate(store.log) if isinstance(j, DeleteUserJob))
    assert last_barrier < delete_job
    assert p.stats.deletes == 1
    # Two more events: the new profile's first job carries n = 1, 2, 3.
    asyncio.run(p.process_batch([rec(8, value("new2")), rec(9, value("new3"))]))
    assert summary(sink.sent)[-1] == ("u1", ["new1", "new2", "new3"], [1, 2, 3])


def test_a_delete_of_a_user_with_nothing_stored_still_reaches_the_embed_worker() -> None:
    store, clock = Store(), Clock()
    sink = FakeSink(store)
    p = processor(store, sink, clock)
    asyncio.run(p.process_batch([delete_rec(0, "ghost")]))
    assert summary(sink.sent) == [("delete", "ghost")]
    assert b"ghost" not in store.live


def test_a_delete_outside_its_users_partition_is_rekeyed_with_its_header() -> None:
    store, clock = Store(), Clock()
    sink = FakeSink(store)
    p = processor(store, sink, clock, partitions=8)
    home = partition_for(b"u1", 8)
    away = (home + 1) % 8
    asyncio.run(p.process_batch([delete_rec(0, partition=away)]))
    ((topic, key, _raw, partition, headers),) = sink.other
    assert (topic, key, partition) == (TOPICS.repartition, b"u1", home)
    assert headers is not None and (CONTROL_HEADER, b"delete_user") in headers
    assert not sink.sent


def test_unreadable_control_records_are_dead_letters_never_events() -> None:
    store, clock = Store(), Clock()
    sink = FakeSink(store)
    p = processor(store, sink, clock)
    event = value("e1")
    unknown_op = Record(TOPICS.events, 0, 0, b"u1", event, headers=[(CONTROL_HEADER, b"merge")])
    no_user = Record(
        TOPICS.events, 0, 1, b"u1", json.dumps({"user_id": ""}).encode(),
        headers=[(CONTROL_HEADER, b"delete_user")],
    )  # fmt: skip
    asyncio.run(p.process_batch([unknown_op, no_user]))
    letters = [DeadLetter.from_record(k, v, h or []) for t, k, v, _, h in sink.other]
    assert [(d.reason, d.detail) for d in letters] == [
        ("bad_control", "unknown control operation 'merge'"),
        ("bad_control", "user_id must not be empty"),
    ]
    assert not sink.sent and not store.live  # the event body with the bad header: not applied
