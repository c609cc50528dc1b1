"""Getting events into the system: a Python API for applications and ``interest-stream publish``.

Every record is validated with the same rules the stream workers apply
(:mod:`streams.contracts.events`):
valid events go to ``interest.events`` keyed by ``user_id`` (so one user's events stay in order on
one partition); anything else goes to the dead-letter topic with the original bytes and a reason,
so nothing is lost. The report of a run lists each rejected line (number, reason, detail), and
every process that publishes counts what it sent and rejected in Prometheus counters
(``interest_publish_events_total``, ``interest_publish_dead_letters_total{reason}``) in its default
registry, for an application that serves ``/metrics``.

>>> import asyncio
>>> async def main():                                          # doctest: +SKIP
...     async with EventPublisher() as pub:
...         await pub.publish({"event_id": "e1", "user_id": "u1", "type": "click",
...                            "ts": 1700000000000, "text": "GAN use cases"})
>>> asyncio.run(main())                                        # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Self

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaError
from prometheus_client import Counter as PromCounter

from streams.contracts.dlq import DeadLetter
from streams.contracts.events import Event, EventRules, InvalidEvent, parse_event, validate_event
from streams.settings import IntakeSettings, KafkaSettings, TopicSettings
from streams.topics import ensure_topics, refusal, unreachable

SENT = PromCounter("interest_publish_events", "Events an EventPublisher sent to the events topic")
DEAD_LETTERED = PromCounter(
    "interest_publish_dead_letters",
    "Records an EventPublisher rejected and sent to the dead-letter topic, by reason",
    ["reason"],
)
#: Rejected lines a report lists one by one; beyond that it only counts them.
MAX_LISTED = 1000


@dataclass(frozen=True, slots=True)
class Rejected:
    """One record that went to the dead-letter topic instead of the events topic."""

    source: str  # ``file:line``, or what the caller named it
    line: int | None
    reason: str
    detail: str

    def describe(self) -> str:
        """``events.jsonl:3: not_json: ...`` (the compiler's form: editors jump to the line)."""
        return f"{self.source}: {self.reason}: {self.detail}"


@dataclass
class PublishReport:
    """What a publish run did: counts a user can check against the input, and which lines went
    to the dead-letter topic and why (the first :data:`MAX_LISTED`)."""

    sent: int = 0
    dead_lettered: int = 0
    blank_lines: int = 0
    reasons: Counter[str] = field(default_factory=Counter)
    rejected: list[Rejected] = field(default_factory=list)

    def reject(self, rejected: Rejected) -> None:
        self.dead_lettered += 1
        self.reasons[rejected.reason] += 1
        if len(self.rejected) < MAX_LISTED:
            self.rejected.append(rejected)

    @property
    def not_listed(self) -> int:
        return self.dead_lettered - len(self.rejected)

    def summary(self) -> str:
        text = f"sent {self.sent} events, {self.dead_lettered} to the dead-letter topic"
        if self.reasons:
            text += " (" + ", ".join(f"{r}: {n}" for r, n in sorted(self.reasons.items())) + ")"
        return text

    def rejected_lines(self) -> list[str]:
        """One line per rejected record, then how many more were not listed and where to look."""
        lines = [r.describe() for r in self.rejected]
        if self.not_listed:
            lines.append(f"... and {self.not_listed} more")
        if lines:
            lines.append("(`interest-stream dlq` shows the dead letters with the original records)")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "dead_lettered": self.dead_lettered,
            "blank_lines": self.blank_lines,
            "reasons": dict(self.reasons),
            "rejected": [
                {"source": r.source, "line": r.line, "reason": r.reason, "detail": r.detail}
                for r in self.rejected
            ],
            "rejected_not_listed": self.not_listed,
        }


class EventPublisher:
    """Validating producer for ``interest.events``. Use as an async context manager."""

    def __init__(
        self,
        kafka: KafkaSettings | None = None,
        topics: TopicSettings | None = None,
        rules: EventRules | None = None,
        *,
        create_topics: bool = True,
    ) -> None:
        self.kafka = kafka or KafkaSettings()
        self.topics = topics or TopicSettings()
        self.rules = rules or IntakeSettings().rules()
        self._create_topics = create_topics
        self._producer: AIOKafkaProducer | None = None
        self.report = PublishReport()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._create_topics:
            await ensure_topics(self.kafka, self.topics, (self.topics.events, self.topics.dlq))
        producer = AIOKafkaProducer(
            **self.kafka.client_kwargs(),
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            max_batch_size=256 * 1024,
        )
        try:
            await producer.start()
        except KafkaConnectionError as exc:
            await producer.stop()
            raise unreachable(self.kafka, exc, await refusal(self.kafka)) from exc
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()  # flushes everything still buffered
            self._producer = None

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("EventPublisher is not started: use `async with EventPublisher()`")
        return self._producer

    async def publish(self, event: Event | Mapping[str, Any]) -> None:
        """Validate and send one event; raises :class:`InvalidEvent` for a bad one."""
        now_ms = int(time.time() * 1000)
        if not isinstance(event, Event):
            event = validate_event(event, now_ms=now_ms, rules=self.rules)
        await self._send_event(event.user_id, event.to_json())

    async def publish_raw(self, raw: bytes, source: str, *, line: int | None = None) -> bool:
        """Send one raw record: valid → events topic, invalid → DLQ. True if it was valid."""
        now_ms = int(time.time() * 1000)
        try:
            event = parse_event(raw, now_ms=now_ms, rules=self.rules)
        except InvalidEvent as exc:
            letter = DeadLetter(None, raw, exc.reason, exc.detail, source, "publish", now_ms)
            await self.producer.send(
                self.topics.dlq, letter.carried_value(), headers=letter.headers()
            )
            self.report.reject(Rejected(source, line, exc.reason, exc.detail))
            DEAD_LETTERED.labels(exc.reason).inc()
            return False
        # The producer's own bytes go on unchanged: the stream workers validate them again.
        await self._send_event(event.user_id, raw)
        return True

    async def publish_lines(self, lines: Iterable[bytes], source_name: str) -> PublishReport:
        """Publish JSON lines (e.g. a file); blank lines are skipped. Waits for every ack."""
        for number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line:
                self.report.blank_lines += 1
                continue
            await self.publish_raw(line, f"{source_name}:{number}", line=number)
        await self.producer.flush()
        return self.report

    async def _send_event(self, user_id: str, value: bytes) -> None:
        try:
            await self.producer.send(self.topics.events, value, key=user_id.encode())
        except KafkaError as exc:
            raise unreachable(self.kafka, exc) from exc
        self.report.sent += 1
        SENT.inc()


def publish_file(
    lines: Iterable[bytes],
    source_name: str,
    kafka: KafkaSettings | None = None,
    topics: TopicSettings | None = None,
    rules: EventRules | None = None,
) -> PublishReport:
    """Blocking helper for scripts and the CLI: publish JSON lines and wait for every ack."""

    async def run() -> PublishReport:
        async with EventPublisher(kafka, topics, rules) as pub:
            return await pub.publish_lines(lines, source_name)

    return asyncio.run(run())
