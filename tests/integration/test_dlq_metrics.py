"""Dead letters counted from the DLQ topic, whichever stage wrote them (streams.dlq_metrics)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, generate_latest

from streams.contracts.dlq import DeadLetter
from streams.dlq_metrics import DeadLetterCounter
from streams.settings import KafkaSettings, TopicSettings
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


async def write(kafka: KafkaSettings, topic: str, letters: list[DeadLetter]) -> None:
    producer = AIOKafkaProducer(**kafka.client_kwargs())
    await producer.start()
    try:
        for letter in letters:
            await producer.send(
                topic, letter.carried_value(), key=letter.carried_key(), headers=letter.headers()
            )
        await producer.flush()
    finally:
        await producer.stop()


def letter(stage: str, reason: str, i: int) -> DeadLetter:
    return DeadLetter(b"u", b"bad %d" % i, reason, "why", f"file:{i}", stage, 0)


def test_dead_letters_of_every_stage_are_counted_by_stage_and_reason(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    async def run() -> str:
        registry = CollectorRegistry()
        counter = DeadLetterCounter(kafka, topics.dlq, registry=registry)
        try:
            await counter.refresh()  # no topic yet: nothing, no error
            assert counter.counts == {}
            await ensure_topics(kafka, topics)
            first = [letter("publish", "not_json", i) for i in range(3)]
            await write(kafka, topics.dlq, [*first, letter("stream", "oversize", 3)])
            await counter.refresh()
            await write(kafka, topics.dlq, [letter("publish", "not_json", 4)])
            await counter.refresh()
            return generate_latest(registry).decode()
        finally:
            await counter.close()

    text = asyncio.run(run())
    assert 'interest_dead_letters_total{reason="not_json",stage="publish"} 4.0' in text
    assert 'interest_dead_letters_total{reason="oversize",stage="stream"} 1.0' in text
