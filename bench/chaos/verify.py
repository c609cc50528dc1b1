"""After the chaos: what should be in the store, what is, and how far apart they are.

The truth is the events topic itself, read from the beginning: each user's records in partition
order, the invalid ones left out, each ``event_id`` once (its first record) — exactly what the
stream workers must number 1, 2, 3 ... whatever crashed meanwhile. The run also checks that every
event it generated is there (the publisher lost nothing). Each user's vectors are then recomputed
offline, in one :func:`models.profile.batch_compute` over those events (the text vectors from the
same model, the tags as the embed worker chooses them: :class:`streams.embed.fold.EventSources`),
and compared with the stored point: vectors within ``atol``, ``seq`` = the number of distinct
valid events, ``events_folded`` = the same (an event folded twice shows up there, one never
folded too).
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition

from models.encoder import Encoder
from models.profile import InterestSpec, batch_compute
from models.settings import ModelSettings, QdrantSettings
from models.store import InterestStore, StoredUser
from streams.contracts.events import Event, InvalidEvent, parse_event
from streams.contracts.jobs import JobEvent
from streams.embed.fold import EventSources
from streams.settings import IntakeSettings, KafkaSettings


@dataclass
class LogRecord:
    key: bytes | None
    value: bytes
    timestamp: int
    headers: dict[str, bytes]


async def read_all(kafka: KafkaSettings, topic: str, partitions: int) -> list[list[LogRecord]]:
    """Every record of ``topic`` (``partitions`` of them) from the log start to its end now,
    per partition in order."""
    consumer = AIOKafkaConsumer(
        **kafka.client_kwargs(), enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: dict[int, list[LogRecord]] = {tp.partition: [] for tp in tps}
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset < ends[tp]:
                        out[tp.partition].append(
                            LogRecord(r.key, r.value or b"", r.timestamp, dict(r.headers))
                        )
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
        return [out[p] for p in range(partitions)]
    finally:
        await consumer.stop()


@dataclass
class Expected:
    """Per user, its distinct valid events in log order; what the log held besides."""

    events: dict[str, list[Event]] = field(default_factory=dict)
    records: int = 0
    invalid: int = 0
    duplicates: int = 0


def expected_from_log(partitions: Iterable[Sequence[LogRecord]]) -> Expected:
    """What the stream workers must have numbered: the log's valid events, each id once."""
    rules = IntakeSettings().rules()
    out = Expected()
    seen: dict[str, set[str]] = defaultdict(set)
    events: dict[str, list[Event]] = defaultdict(list)
    for records in partitions:
        for r in records:
            out.records += 1
            try:
                event = parse_event(r.value, now_ms=r.timestamp, rules=rules)
            except InvalidEvent:
                out.invalid += 1
                continue
            if event.event_id in seen[event.user_id]:
                out.duplicates += 1
                continue
            seen[event.user_id].add(event.event_id)
            events[event.user_id].append(event)
    out.events = dict(events)
    return out


def dead_letters(partitions: Iterable[Sequence[LogRecord]]) -> dict[str, Any]:
    """The DLQ's records by stage and reason, and the distinct event ids dead-lettered."""
    by: dict[str, int] = defaultdict(int)
    ids: set[str] = set()
    for records in partitions:
        for r in records:
            stage = r.headers.get("interest.dlq.stage", b"?").decode()
            reason = r.headers.get("interest.dlq.reason", b"?").decode()
            by[f"{stage}/{reason}"] += 1
            with contextlib.suppress(ValueError, KeyError, TypeError):
                ids.add(str(json.loads(r.value)["event_id"]))
    return {"records": sum(by.values()), "by_stage_reason": dict(by), "distinct_ids": ids}


def recompute(
    expected: Mapping[str, Sequence[Event]], spec: InterestSpec, encoder: Encoder
) -> dict[str, dict[str, np.ndarray]]:
    """Each user's vectors from scratch: one ``batch_compute`` over its events in order."""
    texts = sorted({e.text for events in expected.values() for e in events if e.text})
    vectors = dict(zip(texts, encoder.encode(texts), strict=True))
    sources = EventSources(vectors={(None, t): v for t, v in vectors.items()})
    out: dict[str, dict[str, np.ndarray]] = {}
    for user, events in expected.items():
        observations = []
        for n, e in enumerate(events, start=1):
            job_event = JobEvent(n, e.event_id, e.type, e.weight, e.ts_ms, e.item_id, e.text,
                                 e.tags)  # fmt: skip
            obs = sources.observation(job_event)
            if obs is not None:
                observations.append(obs)
        out[user] = batch_compute(observations, spec).vectors()
    return out


def read_users(path: Path, users: Sequence[str], chunk: int = 500) -> dict[str, StoredUser]:
    """The stored user points, straight from the embedded folder (the workers are stopped)."""
    got: dict[str, StoredUser] = {}
    settings = QdrantSettings(path=path, url=None, fault_file=None)
    with InterestStore.from_settings(settings) as store:
        for i in range(0, len(users), chunk):
            got.update(store.get_users(users[i : i + chunk]))
    return got


@dataclass
class Comparison:
    users: int = 0
    users_missing: int = 0
    events_expected: int = 0
    events_lost: int = 0
    events_applied_twice: int = 0
    seq_mismatches: int = 0
    vector_mismatches: int = 0
    max_abs_diff: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.users_missing or self.events_lost or self.events_applied_twice
                    or self.seq_mismatches or self.vector_mismatches)  # fmt: skip


def compare(
    expected: Mapping[str, Sequence[Event]],
    want: Mapping[str, Mapping[str, np.ndarray]],
    got: Mapping[str, StoredUser],
    atol: float,
) -> Comparison:
    """Stored points against the recompute, user by user."""
    c = Comparison(users=len(expected))
    for user, events in expected.items():
        n = len(events)
        c.events_expected += n
        point = got.get(user)
        if point is None:
            c.users_missing += 1
            c.events_lost += n
            _note(c, f"{user}: no point ({n} events)")
            continue
        seq = int(point.payload.get("seq", 0))
        folded = int(point.payload.get("events_folded", 0))
        c.events_lost += max(0, n - folded)
        c.events_applied_twice += max(0, folded - n)
        if seq != n or folded != n:
            c.seq_mismatches += 1
            _note(c, f"{user}: seq {seq}, folded {folded}, expected {n}")
        names = set(want[user])
        if set(point.vectors) != names:
            c.vector_mismatches += 1
            _note(c, f"{user}: vectors {sorted(point.vectors)} != {sorted(names)}")
            continue
        diff = max(
            (float(np.max(np.abs(point.vectors[k] - want[user][k]))) for k in names), default=0.0
        )
        c.max_abs_diff = max(c.max_abs_diff, diff)
        if diff > atol:
            c.vector_mismatches += 1
            _note(c, f"{user}: max |diff| {diff:.2e}")
    return c


def _note(c: Comparison, line: str) -> None:
    if len(c.examples) < 10:
        c.examples.append(line)


def load_encoder() -> Encoder:
    return Encoder.from_settings(ModelSettings()).load()
