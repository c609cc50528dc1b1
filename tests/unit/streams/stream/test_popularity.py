"""Item popularity: the decayed-count estimator, its records, the emit policy, the processor."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.contracts.popularity import InvalidRecord, PopularityUpdate
from streams.stream.popularity import (
    NEVER,
    Action,
    Contributions,
    DecayedCount,
    EmitPolicy,
    ItemState,
    PopularityProcessor,
    decode_contributions,
    encode_contributions,
)
from streams.stream.processor import StreamProcessor
from streams.stream.triggers import TriggerPolicy
from streams.stream.types import Record, StreamStats, Topics, partition_for
from streams.stream.userstate import StateLimits

H = 3600.0  # half-life in the tests, seconds
T0 = 1_795_000_000_000
TOPICS = Topics(items="app-item-repartition", popularity="interest.items.popularity")


def direct(events: list[tuple[float, int]], now_ms: int, half_life_s: float = H) -> float:
    """The definition: Σ w · 2^(−(now − t)/h), events after ``now`` counted undecayed."""
    return sum(w * 2.0 ** (-max(0, now_ms - t) / 1000 / half_life_s) for w, t in events)


events_st = st.lists(
    st.tuples(
        st.floats(0.0, 100.0, allow_nan=False),
        st.integers(T0 - 10 * 3_600_000, T0 + 3_600_000),
    ),
    max_size=40,
)


# -- the estimator ------------------------------------------------------------------------------


def test_a_weight_halves_every_half_life_and_never_grows_by_waiting() -> None:
    c = DecayedCount(H).update(4.0, T0)
    assert c.get() == 4.0
    assert c.get(T0 + 3_600_000) == pytest.approx(2.0)
    assert c.get(T0 + 7_200_000) == pytest.approx(1.0)
    assert c.get(T0 - 3_600_000) == 4.0  # before its newest event: not inflated
    assert DecayedCount(H).get(T0) == 0.0


@settings(max_examples=200, deadline=None)
@given(events_st, st.randoms(use_true_random=False), st.integers(0, 40))
def test_any_order_and_any_grouping_give_the_definition(
    events: list[tuple[float, int]], rnd: random.Random, cut: int
) -> None:
    now = T0 + 2 * 3_600_000
    want = direct(events, now)
    shuffled = list(events)
    rnd.shuffle(shuffled)
    one = DecayedCount(H)
    for w, t in shuffled:
        one.update(w, t)
    left, right = DecayedCount(H), DecayedCount(H)
    for w, t in shuffled[:cut]:
        left.update(w, t)
    for w, t in shuffled[cut:]:
        right.update(w, t)
    merged = left.merge(right)
    for got in (one.get(now), merged.get(now)):
        assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


def test_negative_and_non_finite_weights_are_refused() -> None:
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError):
            DecayedCount(H).update(bad, T0)
    with pytest.raises(ValueError):
        DecayedCount(0.0)


def test_far_apart_events_underflow_quietly() -> None:
    c = DecayedCount(1.0).update(1.0, 0).update(1.0, 10**12)
    assert c.get() == 1.0 and c.get(2 * 10**12) == 0.0


# -- per-batch contributions and records --------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(events_st)
def test_contributions_equal_the_estimator_and_skip_non_positive_weights(
    events: list[tuple[float, int]],
) -> None:
    batch = Contributions(H)
    counted = [batch.add("item", w, t) for w, t in events]
    batch.add("item", -1.0, T0)  # a dislike: not counted
    assert counted == [w > 0 for w, _ in events]
    records = batch.drain(lambda key: 0)
    assert len(batch) == 0 and batch.drain(lambda key: 0) == []
    if not any(counted):
        assert records == []
        return
    [(partition, raw)] = records
    [(item, mass, ref)] = decode_contributions(raw)
    now = T0 + 3 * 3_600_000
    got = DecayedCount(H, mass, ref).get(now)
    assert (partition, item) == (0, "item")
    assert got == pytest.approx(direct(events, now), rel=1e-9, abs=1e-12)


def test_one_record_per_item_partition() -> None:
    batch = Contributions(H)
    items = [f"item-{i}" for i in range(50)]
    for i, item in enumerate(items):
        batch.add(item, 1.0, T0 + i)
        batch.add(item, 0.5, T0 + i)
    records = batch.drain(lambda key: partition_for(key, 4))
    assert sorted(p for p, _ in records) == sorted({partition_for(i.encode(), 4) for i in items})
    seen = {}
    for partition, raw in records:
        for item, mass, ref in decode_contributions(raw):
            assert partition_for(item.encode(), 4) == partition
            seen[item] = (mass, ref)
    assert seen == {item: (1.5, T0 + i) for i, item in enumerate(items)}


def test_unreadable_records_raise_invalid_record() -> None:
    for raw in (b"", b"{", b"[]", b'{"v": 2, "items": []}', b'{"v": 1, "items": [["a", -1, 0]]}',
                b'{"v": 1, "items": [["a", 1]]}', None):  # fmt: skip
        with pytest.raises(InvalidRecord):
            decode_contributions(raw)
    assert decode_contributions(encode_contributions([["a", 1.5, T0]])) == [("a", 1.5, T0)]
    update = PopularityUpdate("a", 2.5, T0, H)
    assert PopularityUpdate.from_json(update.to_json()) == update
    for body in ({"v": 1, "item_id": "a", "popularity": -1, "as_of_ms": 0, "half_life_s": 1},
                 {"v": 1, "item_id": "", "popularity": 1, "as_of_ms": 0, "half_life_s": 1},
                 {"v": 1, "item_id": "a"}):  # fmt: skip
        with pytest.raises(InvalidRecord):
            PopularityUpdate.from_json(json.dumps(body).encode())


def test_item_state_round_trips_in_33_bytes() -> None:
    state = ItemState(mass=3.25, ref_ms=T0, offset=17, emitted=2.5)
    raw = state.to_bytes()
    assert len(raw) == 33 and ItemState.from_bytes(raw) == state
    assert ItemState().emitted == NEVER
    with pytest.raises(ValueError):
        ItemState.from_bytes(b"\x02" + raw[1:])


# -- the emit policy ----------------------------------------------------------------------------


def test_policy_emits_new_and_moved_values_and_drops_faded_ones() -> None:
    p = EmitPolicy(half_life_s=H, tolerance=0.1, floor=0.01)
    assert p.decide(1.0, NEVER) is Action.EMIT
    assert p.decide(1.05, 1.0) is Action.KEEP
    assert p.decide(0.95, 1.0) is Action.KEEP
    assert p.decide(1.11, 1.0) is Action.EMIT
    assert p.decide(0.89, 1.0) is Action.EMIT
    assert p.decide(0.009, 1.0) is Action.DROP
    assert p.decide(0.009, NEVER) is Action.DROP


@pytest.mark.parametrize(("value", "emitted"), [(1.0, 1.0), (1.05, 1.0), (0.02, 0.02), (5, 4.6)])
def test_next_check_is_when_decay_alone_leaves_the_band(value: float, emitted: float) -> None:
    p = EmitPolicy(half_life_s=H, tolerance=0.1, floor=0.015)
    due = p.next_check_ms(value, emitted, T0)
    later = DecayedCount(H, value, T0)
    assert p.decide(later.get(due - 1000), emitted) is Action.KEEP
    assert p.decide(later.get(due + 1), emitted) is not Action.KEEP


# -- the processor (fake table and sink) --------------------------------------------------------


class FakeTable:
    """The item table; ``durable`` is what a restart would recover (after a barrier)."""

    def __init__(self, durable: dict[bytes, bytes] | None = None) -> None:
        self.durable = dict(durable or {})
        self.live = dict(self.durable)
        self.unsent: dict[bytes, bytes | None] = {}
        self.lazy: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.live.get(key)

    def set(self, key: bytes, value: bytes) -> None:
        self.live[key] = self.unsent[key] = value
        self.lazy.pop(key, None)

    def set_lazy(self, key: bytes, value: bytes) -> None:
        self.live[key] = self.lazy[key] = value

    def delete(self, key: bytes) -> None:
        self.live.pop(key, None)
        self.unsent[key] = None
        self.lazy.pop(key, None)

    def settle(self) -> None:
        pass  # writes are durable at a barrier here (flush)

    def items(self, partitions: object = None) -> Iterator[tuple[bytes, bytes]]:
        yield from list(self.live.items())  # all: the processor keeps its own partitions

    async def write_back(self) -> None:
        pass

    def lazy_due(self, max_age_s: float) -> bool:
        return bool(self.lazy)

    async def write_back_lazy(self, max_age_s: float = 0.0, limit: int | None = None) -> None:
        self.unsent.update(self.lazy)
        self.lazy.clear()

    def flush(self) -> None:
        for key, value in self.unsent.items():
            if value is None:
                self.durable.pop(key, None)
            else:
                self.durable[key] = value
        self.unsent.clear()


class FakeSink:
    def __init__(self, table: FakeTable | None = None) -> None:
        self.table = table
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        *,
        partition: int | None = None,
        headers: Any = None,
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, partition))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def barrier(self) -> None:
        if self.table is not None:
            self.table.flush()

    def updates(self) -> dict[str, PopularityUpdate]:
        out = {}
        for topic, _key, value, _p in self.sent:
            if topic == TOPICS.popularity:
                update = PopularityUpdate.from_json(value)
                out[update.item_id] = update
        return out

    def item_records(self, offset: int = 0) -> list[Record]:
        """The sent item records as the item agent would read them (offsets per partition)."""
        out: list[Record] = []
        next_offset: dict[int, int] = {}
        for topic, key, value, partition in self.sent:
            if topic == TOPICS.items and partition is not None:
                o = next_offset[partition] = next_offset.get(partition, offset - 1) + 1
                out.append(Record(topic, partition, o, key, value))
        return out


class Clock:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> float:
        return self.ms / 1000


def popularity(
    table: FakeTable, sink: FakeSink, clock: Clock, partitions: int = 1, **policy: Any
) -> PopularityProcessor:
    p = PopularityProcessor(
        store=table,
        sink=sink,
        partitions=partitions,
        partition_of=partition_for,
        topic=TOPICS.popularity,
        policy=EmitPolicy(half_life_s=H, **policy),
        stats=StreamStats(),
        clock=clock,
    )
    p.on_assigned(range(partitions))
    return p


def record(offset: int, entries: list[list[Any]], partition: int = 0) -> Record:
    return Record(TOPICS.items, partition, offset, None, encode_contributions(entries))


def test_records_replayed_after_a_restart_are_skipped_exactly() -> None:
    table, clock = FakeTable(), Clock()
    sink = FakeSink(table)
    p = popularity(table, sink, clock)
    first = [record(0, [["a", 1.0, T0], ["b", 2.0, T0]]), record(1, [["a", 1.0, T0]])]
    asyncio.run(p.apply(first))
    table.flush()  # the table's changelog is durable, the offsets not yet committed: crash
    p2 = popularity(FakeTable(table.durable), sink, clock)
    asyncio.run(p2.apply([*first, record(2, [["a", 0.5, T0], ["c", 1.0, T0]])]))
    assert p2.stats.popularity_replays == 3
    clock.ms += 1
    asyncio.run(p2.emit_due())
    got = {k: u.popularity for k, u in sink.updates().items()}
    factor = 2 ** (-1 / 3_600_000)  # 1 ms later
    assert got == pytest.approx({"a": 2.5 * factor, "b": 2.0 * factor, "c": factor})


def test_emits_changed_items_once_then_on_decay_then_zero_and_forgets() -> None:
    table, clock = FakeTable(), Clock()
    sink = FakeSink(table)
    p = popularity(table, sink, clock, tolerance=0.1, floor=0.3)
    asyncio.run(p.apply([record(0, [["a", 1.0, T0]])]))
    assert asyncio.run(p.emit_due()) == 1
    assert sink.updates()["a"].popularity == 1.0 and sink.updates()["a"].as_of_ms == T0
    assert asyncio.run(p.emit_due()) == 0  # nothing moved
    asyncio.run(p.apply([record(1, [["a", 0.05, T0]])]))
    assert asyncio.run(p.emit_due()) == 0  # within 10 %
    clock.ms += int(0.1 * 3_600_000)  # decay: 1.05 -> 0.98, still within
    assert asyncio.run(p.emit_due()) == 0
    clock.ms = T0 + int(0.3 * 3_600_000)  # 1.05 * 2^-0.3 = 0.853: out of the band
    assert asyncio.run(p.emit_due()) == 1
    assert sink.updates()["a"].popularity == pytest.approx(1.05 * 2**-0.3)
    clock.ms = T0 + 2 * 3_600_000  # 0.26 < floor: emitted once as 0, then forgotten
    assert asyncio.run(p.emit_due()) == 1
    assert sink.updates()["a"].popularity == 0.0
    assert table.get(b"a") is None and table.unsent[b"a"] is None  # a changelog tombstone
    clock.ms += 10 * 3_600_000
    assert asyncio.run(p.emit_due()) == 0


def test_restart_re_arms_from_the_table_and_only_owned_partitions_emit() -> None:
    table, clock = FakeTable(), Clock()
    sink = FakeSink(table)
    p = popularity(table, sink, clock, partitions=4)
    items = [f"i{k}" for k in range(12)]
    records = [record(0, [[i, 1.0, T0]], partition=partition_for(i.encode(), 4)) for i in items]
    asyncio.run(p.apply(records))
    lost = partition_for(b"i0", 4)
    p.active.discard(lost)
    asyncio.run(p.emit_due())
    owned = {i for i in items if partition_for(i.encode(), 4) != lost}
    assert set(sink.updates()) == owned
    asyncio.run(p.on_revoked())  # writes the lazily kept "emitted" values
    # The new owner of everything: only the never-emitted items go out.
    sink2 = FakeSink()
    p2 = popularity(FakeTable(table.durable), sink2, clock, partitions=4)
    asyncio.run(p2.emit_due())
    assert set(sink2.updates()) == set(items) - owned


def test_invalid_and_misrouted_records_are_counted_and_skipped() -> None:
    table, clock = FakeTable(), Clock()
    p = popularity(table, FakeSink(table), clock, partitions=4)
    wrong = (partition_for(b"x", 4) + 1) % 4
    bad = Record(TOPICS.items, 0, 0, None, b"{oops")
    asyncio.run(p.apply([bad, record(0, [["x", 1.0, T0]], partition=wrong)]))
    assert p.stats.popularity_invalid == 2 and not table.live


def test_emission_is_bounded_per_tick() -> None:
    table, clock = FakeTable(), Clock()
    sink = FakeSink(table)
    p = popularity(table, sink, clock)
    asyncio.run(p.apply([record(0, [[f"i{k}", 1.0, T0] for k in range(25)])]))
    assert [asyncio.run(p.emit_due(limit=10)) for _ in range(4)] == [10, 10, 5, 0]


# -- through the stream processor ---------------------------------------------------------------


def event(eid: str, user: str, item: str | None, type_: str = "click", ts: int = T0) -> bytes:
    body: dict[str, Any] = {"event_id": eid, "user_id": user, "type": type_, "ts": ts, "text": "t"}
    if item is not None:
        body["item_id"] = item
    return json.dumps(body).encode()


def stream(table: FakeTable, sink: FakeSink, clock: Clock, partitions: int) -> StreamProcessor:
    p = StreamProcessor(
        store=table,
        sink=sink,
        partitions=partitions,
        policy=TriggerPolicy(flush_count=1000, min_interval_ms=0),
        limits=StateLimits(dedupe_window=64),
        topics=TOPICS,
        clock=clock,
        popularity_half_life_s=H,
    )
    p.on_assigned(range(partitions))
    return p


def test_events_to_popularity_end_to_end_with_duplicates_negatives_and_replays() -> None:
    """User agent -> item records -> item table -> emitted values = the definition over the
    distinct positive events, whatever the batching and however often records are replayed."""
    clock = Clock(T0 + 60_000)
    n = 4
    users_table, items_table = FakeTable(), FakeTable()
    sink = FakeSink(items_table)
    users = stream(users_table, sink, clock, n)
    rnd = random.Random(7)
    weights = {"view": 0.5, "click": 1.0, "purchase": 3.0, "dislike": -1.0}
    sent: list[Record] = []
    truth: dict[str, list[tuple[float, int]]] = {}
    for i in range(300):
        user, item = f"u{rnd.randrange(20)}", f"item-{rnd.randrange(15)}"
        type_ = rnd.choice(list(weights))
        ts = T0 - rnd.randrange(0, 5 * 3_600_000)
        raw = event(f"e{i}", user, item if i % 10 else None, type_, ts)
        key = user.encode()
        sent.append(Record("interest.events", partition_for(key, n), i, key, raw))
        if i % 10 and weights[type_] > 0:
            truth.setdefault(item, []).append((weights[type_], ts))
    duplicates = [Record(r.topic, r.partition, r.offset + 1000, r.key, r.value) for r in sent[:40]]
    records = sent + duplicates
    for k in range(0, len(records), 37):
        asyncio.run(users.process_batch(records[k : k + 37]))
    asyncio.run(users.process_batch(sent[:100]))  # replayed offsets: no new counts
    assert users.stats.item_interactions == sum(len(v) for v in truth.values())

    items = popularity(items_table, FakeSink(), clock, partitions=n)
    item_records = sink.item_records()
    for k in range(0, len(item_records), 5):
        asyncio.run(items.apply(item_records[k : k + 5]))
    asyncio.run(items.apply(item_records[: len(item_records) // 2]))  # the item agent replays
    asyncio.run(items.emit_due())
    got = items.sink.updates()  # type: ignore[attr-defined]
    assert set(got) == set(truth)
    for item, evs in truth.items():
        want = direct(evs, clock.ms)
        assert got[item].popularity == pytest.approx(want, rel=1e-9), item


def test_popularity_off_sends_no_item_records() -> None:
    table, clock = FakeTable(), Clock()
    sink = FakeSink(table)
    p = StreamProcessor(
        store=table,
        sink=sink,
        partitions=1,
        policy=TriggerPolicy(flush_count=1000),
        limits=StateLimits(),
        topics=Topics(),
        clock=clock,
    )
    p.on_assigned([0])
    asyncio.run(p.process_batch([Record("interest.events", 0, 0, b"u", event("e", "u", "i"))]))
    assert not sink.sent and p.stats.item_interactions == 0


def test_large_batches_are_split_into_bounded_records() -> None:
    batch = Contributions(H)
    for k in range(2500):
        batch.add(f"item-{k}", 1.0, T0)
    records = batch.drain(lambda key: 0)
    assert [len(decode_contributions(raw)) for _, raw in records] == [1000, 1000, 500]
    assert {p for p, _ in records} == {0}
