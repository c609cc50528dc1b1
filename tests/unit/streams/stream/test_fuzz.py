"""Hostile input on the stream processor (property-based): every bad record becomes exactly one
dead letter with a stable reason, every good event is applied exactly once, nothing raises.

The messages come from tests/fuzz_messages.py (random bytes, invalid UTF-8, deep nesting, huge
numbers, NaN/Infinity, lone surrogates, 1 MB strings, every field with wrong types, keys that
disagree with user_id, duplicate JSON keys, control characters) plus hypothesis' own bytes; the
processor runs on the fakes of test_app.py, re-keyed records fed back as the worker's agent does.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter

from fuzz_messages import BAD, GOOD, TS, Message, carried, mixed
from hypothesis import given, settings
from hypothesis import strategies as st
from unit.streams.stream.test_app import TOPICS, Clock, FakeSink, FakeStore

from streams.contracts.dlq import DeadLetter
from streams.contracts.events import REASONS
from streams.stream.processor import StreamProcessor
from streams.stream.triggers import TriggerPolicy
from streams.stream.types import Record, partition_for
from streams.stream.userstate import StateLimits

PARTITIONS = 3
CASES = (*BAD, *GOOD)


@st.composite
def messages(draw: st.DrawFn) -> list[Message]:
    picks = draw(
        st.lists(
            st.one_of(
                st.tuples(st.sampled_from(range(len(CASES))), st.integers(0, 2**32)),
                st.binary(max_size=200),  # hypothesis' own bytes, shrinkable
            ),
            min_size=1,
            max_size=40,
        )
    )
    out = []
    for i, pick in enumerate(picks):
        if isinstance(pick, bytes):
            out.append(Message(pick[:8] or None, pick, case="hypothesis bytes"))
        else:
            case, seed = pick
            out.append(CASES[case](random.Random(seed), i))
    return out


def run(msgs: list[Message], batch: int) -> tuple[FakeSink, list[Record], StreamProcessor]:
    """Feed ``msgs`` in batches of ``batch`` (each record in the partition its key hashes to,
    as a producer's partitioner puts it), then the re-keyed ones until none is left."""
    store = FakeStore()
    sink = FakeSink(store)
    p = StreamProcessor(
        store=store,
        sink=sink,
        partitions=PARTITIONS,
        policy=TriggerPolicy(flush_count=1, min_interval_ms=0),
        limits=StateLimits(dedupe_window=64),
        topics=TOPICS,
        clock=Clock(TS + 10**9),
    )
    p.on_assigned(range(PARTITIONS))
    offsets: Counter[tuple[str, int]] = Counter()

    def record(topic: str, key: bytes | None, value: bytes | None, partition: int) -> Record:
        offsets[topic, partition] += 1
        return Record(topic, partition, offsets[topic, partition] - 1, key, value)

    fed = [
        record(TOPICS.events, m.key, m.value, partition_for(m.key or b"", PARTITIONS)) for m in msgs
    ]
    pending = list(fed)
    seen = 0
    while pending:
        for start in range(0, len(pending), batch):
            asyncio.run(p.process_batch(pending[start : start + batch]))
        rekeyed = [o for o in sink.other[seen:] if o[0] == TOPICS.repartition]
        seen = len(sink.other)
        pending = []
        for _topic, key, value, partition, _headers in rekeyed:
            assert partition is not None and key is not None
            pending.append(record(TOPICS.repartition, key, value, partition))
    return sink, fed, p


@settings(max_examples=150, deadline=None)
@given(messages(), st.integers(1, 16))
def test_every_bad_record_is_one_dead_letter_and_every_good_event_is_applied_once(
    msgs: list[Message], batch: int
) -> None:
    check(msgs, batch)


def test_every_case_at_once_in_worker_sized_batches() -> None:
    msgs = mixed(1_000, seed=5)
    assert {m.case.split(":")[0] for m in msgs} >= {"random bytes", "1 MB string", "good"}
    check(msgs, batch=500)


def check(msgs: list[Message], batch: int) -> None:
    sink, fed, p = run(msgs, batch)
    letters = {
        d.source: d
        for d in (
            DeadLetter.from_record(k, v, h or []) for t, k, v, _, h in sink.other if t == TOPICS.dlq
        )
    }
    assert len(letters) == sum(t == TOPICS.dlq for t, *_ in sink.other)  # one per source
    bad = [(m, r) for m, r in zip(msgs, fed, strict=True) if m.good is None]
    assert set(letters) == {f"{r.topic}/{r.partition}/{r.offset}" for _, r in bad}
    for m, r in bad:
        letter = letters[f"{r.topic}/{r.partition}/{r.offset}"]
        assert letter.reason in REASONS and letter.detail, m.case
        assert m.reason is None or letter.reason == m.reason, (m.case, letter.detail)
        assert (letter.key, letter.value) == carried(m), m.case  # untouched, up to 64 KiB
    applied = [(j.user_id, e.event_id) for j in sink.jobs for e in j.events]
    good = [m.good for m in msgs if m.good is not None]
    assert Counter(applied) == Counter(good)  # every good event once, nothing else
    assert p.stats.events == len(good) and sum(p.stats.dlq.values()) == len(bad)
