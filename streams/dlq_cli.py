"""``interest-stream dlq``: the dead letters, with why each record was rejected.

Reads the dead-letter topic (``INTEREST_TOPICS_DLQ``) from the brokers with a consumer that joins
no group (nothing is committed, nothing moves for anyone else) and prints, per dead letter, when
and where it was rejected (stage), the reason code, the detail, its source (``file:line`` for
``publish``, ``topic/partition/offset`` for the workers) and the original record, as
:mod:`streams.contracts.dlq` stores them. ``--last N`` shows the newest N (default 20, 0 = all),
``--tail`` keeps printing new ones until Ctrl-C, ``--json`` prints a document (JSON lines with
``--tail``) with the whole original record.

Registered on the main command by ``streams.cli``; also runs alone: ``python -m streams.dlq_cli``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import json
import logging
import signal
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import click
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError

from streams.contracts.dlq import DeadLetter
from streams.settings import KafkaSettings, TopicSettings
from streams.topics import KafkaUnavailable, unreachable

DEFAULT_LAST = 20
#: Characters of the original record shown in the text form (``--json`` has it whole).
RECORD_CHARS = 300
#: A read of the existing letters gives up when the positions stop moving for this long.
STALL_S = 3.0
#: How often ``--tail`` looks for a dead-letter topic that does not exist yet.
TOPIC_POLL_S = 1.0


@dataclass(frozen=True, slots=True)
class ShownLetter:
    """A dead letter and where it sits in the dead-letter topic."""

    topic: str
    partition: int
    offset: int
    letter: DeadLetter

    @classmethod
    def from_record(cls, record: ConsumerRecord[bytes, bytes]) -> ShownLetter:
        letter = DeadLetter.from_record(record.key, record.value, record.headers or ())
        return cls(record.topic, record.partition, record.offset, letter)

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.letter.ts_ms, self.partition, self.offset)

    def to_dict(self) -> dict[str, Any]:
        letter = self.letter
        out: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "reason": letter.reason,
            "detail": letter.detail,
            "source": letter.source,
            "stage": letter.stage,
            "rejected_at": _iso(letter.ts_ms),
            "key": None if letter.key is None else letter.key.decode(errors="replace"),
            "record": letter.value.decode(errors="replace"),
        }
        try:
            letter.value.decode()
        except UnicodeDecodeError:  # the exact bytes, for a replay
            out["record_base64"] = base64.b64encode(letter.value).decode()
        return out

    def format(self) -> str:
        letter = self.letter
        record = letter.value.decode(errors="replace")
        if len(record) > RECORD_CHARS:
            record = (
                f"{record[:RECORD_CHARS]}... ({len(letter.value)} bytes in all; --json shows it)"
            )
        where = f"{self.topic} {self.partition}/{self.offset}"
        return "\n".join(
            [
                f"{_iso(letter.ts_ms)}  {letter.stage or '?'}  {letter.reason}  ({where})",
                f"  detail  {letter.detail}",
                f"  source  {letter.source}",
                f"  record  {record}",
            ]
        )


def _iso(ts_ms: int) -> str:
    return dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class DeadLetterReader:
    """Reads the dead-letter topic without a consumer group. ``async with`` it."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.partitions: list[TopicPartition] = []
        self.total = 0  # letters in the topic (within retention) when it was opened
        self._end: dict[TopicPartition, int] = {}
        self._begin: dict[TopicPartition, int] = {}
        self._consumer: AIOKafkaConsumer | None = None

    def _client_kwargs(self) -> dict[str, object]:
        kwargs = self.kafka.client_kwargs()
        kwargs["client_id"] = f"{self.kafka.client_id}-dlq"
        return kwargs

    async def __aenter__(self) -> DeadLetterReader:
        kwargs = self._client_kwargs()
        consumer = AIOKafkaConsumer(
            **kwargs, group_id=None, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        try:
            await consumer.start()
        except KafkaConnectionError as exc:
            await consumer.stop()
            raise unreachable(self.kafka, exc) from exc
        self._consumer = consumer
        self.partitions = await self._partitions(kwargs)
        if self.partitions:
            consumer.assign(self.partitions)
            self._begin = await consumer.beginning_offsets(self.partitions)
            self._end = await consumer.end_offsets(self.partitions)
            self.total = sum(self._end[tp] - self._begin[tp] for tp in self.partitions)
        return self

    async def _partitions(self, kwargs: dict[str, object]) -> list[TopicPartition]:
        """The topic's partitions; none when it does not exist. All topics are described:
        asking for this one by name could auto-create it on a broker that allows that."""
        admin = AIOKafkaAdminClient(**kwargs)
        try:
            await admin.start()
            described = await admin.describe_topics()
        finally:
            await admin.close()
        for topic in described:
            if topic["topic"] == self.topic and not topic["error_code"]:
                found = sorted(p["partition"] for p in topic["partitions"])
                return [TopicPartition(self.topic, p) for p in found]
        return []

    async def __aexit__(self, *exc: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    @property
    def exists(self) -> bool:
        return bool(self.partitions)

    async def existing(self, last: int | None, stop: asyncio.Event) -> list[ShownLetter]:
        """The letters up to the end offsets read at open, oldest first; the newest ``last``."""
        consumer = self._consumer
        if consumer is None or not self.partitions:
            return []
        for tp in self.partitions:
            start = self._begin[tp] if not last else max(self._begin[tp], self._end[tp] - last)
            consumer.seek(tp, start)
        letters: list[ShownLetter] = []
        pending = {tp for tp in self.partitions if await consumer.position(tp) < self._end[tp]}
        moved = time.monotonic()
        while pending and not stop.is_set() and time.monotonic() - moved < STALL_S:
            batch = await consumer.getmany(*pending, timeout_ms=300)
            for tp, records in batch.items():
                letters += [ShownLetter.from_record(r) for r in records if r.offset < self._end[tp]]
                moved = time.monotonic()
            pending = {tp for tp in pending if await consumer.position(tp) < self._end[tp]}
        letters.sort(key=lambda s: s.order)
        return letters[-last:] if last else letters

    async def new_records(self, max_records: int) -> list[ConsumerRecord[Any, Any]]:
        """The records written since the previous call (the first: all the topic holds), read
        up to the end offsets of now, about ``max_records`` at most (the rest comes with the
        next call); none while the topic does not exist. For a running count (streams.dlq_metrics);
        :meth:`existing` and :meth:`follow` are the command's."""
        consumer = self._consumer
        if consumer is None:
            return []
        if not self.partitions:
            self.partitions = await self._partitions(self._client_kwargs())
            if not self.partitions:
                return []
            consumer.assign(self.partitions)  # no group, no offsets: from the start
        end = await consumer.end_offsets(self.partitions)
        records: list[ConsumerRecord[Any, Any]] = []
        pending = {tp for tp in self.partitions if await consumer.position(tp) < end[tp]}
        moved = time.monotonic()
        while pending and len(records) < max_records and time.monotonic() - moved < STALL_S:
            batch = await consumer.getmany(*pending, timeout_ms=300, max_records=5_000)
            for part in batch.values():
                records += part  # past the end too: the position has moved over them
                moved = time.monotonic()
            pending = {tp for tp in pending if await consumer.position(tp) < end[tp]}
        return records

    async def follow(self, stop: asyncio.Event, show: Callable[[ShownLetter], None]) -> None:
        """Show each letter written after the open, as it arrives, until ``stop`` is set. A
        topic that does not exist yet is waited for (everything in it is then new)."""
        consumer = self._consumer
        if consumer is None:
            return
        while not self.partitions and not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), TOPIC_POLL_S)
            self.partitions = await self._partitions(self._client_kwargs())
            self._end = dict.fromkeys(self.partitions, 0)
        if stop.is_set():
            return
        consumer.assign(self.partitions)
        for tp in self.partitions:
            consumer.seek(tp, self._end[tp])
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=300)
            fresh = [ShownLetter.from_record(r) for records in batch.values() for r in records]
            for shown in sorted(fresh, key=lambda s: s.order):
                show(shown)


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)


async def show_dead_letters(
    kafka: KafkaSettings, topic: str, *, last: int | None, tail: bool, as_json: bool
) -> None:
    """Print the existing dead letters, then (``tail``) new ones until SIGINT/SIGTERM."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    async with DeadLetterReader(kafka, topic) as reader:
        letters = await reader.existing(last, stop)
        if as_json and not tail:
            click.echo(json.dumps(_document(reader, letters), indent=2))
            return
        for shown in letters:
            _show(shown, as_json)
        if not as_json:
            click.echo(_footer(reader, letters, last), err=tail)
        if tail:
            click.echo(f"following {topic}; Ctrl-C stops", err=True)
            await reader.follow(stop, lambda shown: _show(shown, as_json))


def _show(shown: ShownLetter, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(shown.to_dict(), sort_keys=True))
    else:
        click.echo(shown.format() + "\n")


def _document(reader: DeadLetterReader, letters: Iterable[ShownLetter]) -> dict[str, Any]:
    shown = [s.to_dict() for s in letters]
    return {
        "topic": reader.topic,
        "exists": reader.exists,
        "total": reader.total,
        "shown": len(shown),
        "dead_letters": shown,
    }


def _footer(reader: DeadLetterReader, letters: list[ShownLetter], last: int | None) -> str:
    if not reader.exists:
        return f"no dead letters: topic {reader.topic} does not exist yet"
    if not reader.total:
        return f"no dead letters in {reader.topic}"
    if last and reader.total > len(letters):
        return (
            f"the last {len(letters)} of {reader.total} dead letters in {reader.topic} "
            "(--last 0 shows all)"
        )
    return f"{reader.total} dead letter{'s' if reader.total != 1 else ''} in {reader.topic}"


@click.command("dlq")
@click.option(
    "--last",
    "-n",
    type=click.IntRange(min=0),
    default=DEFAULT_LAST,
    show_default=True,
    help="Show the newest N dead letters (0 = all of them).",
)
@click.option("--tail", "-f", is_flag=True, help="Then keep printing new ones until Ctrl-C.")
@click.option(
    "--json", "as_json", is_flag=True, help="Print JSON (one line per dead letter with --tail)."
)
def dlq(last: int, tail: bool, as_json: bool) -> None:
    """Dead letters: records rejected by publish or the workers, with the reason, the detail,
    the source (file:line or topic/partition/offset) and the original record.

    Reads INTEREST_TOPICS_DLQ without joining a consumer group, so nothing is committed or moved.
    """
    if logging.getLogger().level > logging.INFO:
        logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # retry chatter; errors say it
    topic = TopicSettings().dlq
    asyncio.run(
        show_dead_letters(KafkaSettings(), topic, last=last or None, tail=tail, as_json=as_json)
    )


if __name__ == "__main__":
    try:
        dlq()
    except KafkaUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
