"""A stream worker's group gets a committed offset on every source partition before it starts
(streams.stream.group_offsets): the log start where none exists, never over an existing one, and not
while the group has members."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from streams.settings import KafkaSettings, TopicSettings
from streams.stream.group_offsets import commit_start_offsets
from streams.topics import ensure_topics

pytestmark = pytest.mark.integration


async def _committed(
    kafka: KafkaSettings, group: str, tps: list[TopicPartition]
) -> list[int | None]:
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group)
    await consumer.start()
    try:
        return [await consumer.committed(tp) for tp in tps]
    finally:
        await consumer.stop()


async def _produce(kafka: KafkaSettings, topic: str, partition: int, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap)
    await producer.start()
    try:
        for i in range(n):
            await producer.send_and_wait(topic, f"r{i}".encode(), partition=partition)
    finally:
        await producer.stop()


@pytest.fixture
def fresh(kafka: KafkaSettings, topics: TopicSettings) -> tuple[str, list[TopicPartition]]:
    """A new group name and the partitions of a new events topic."""
    asyncio.run(ensure_topics(kafka, topics, (topics.events,)))
    tps = [TopicPartition(topics.events, p) for p in range(topics.partitions)]
    return f"g-{uuid.uuid4().hex[:8]}", tps


def test_log_start_is_committed_where_the_group_has_no_offset(
    kafka: KafkaSettings, topics: TopicSettings, fresh: tuple[str, list[TopicPartition]]
) -> None:
    group, tps = fresh

    async def scenario() -> None:
        await _produce(kafka, topics.events, 1, 5)
        await _produce(kafka, topics.events, 2, 5)
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:  # retention moved partition 2's log start to 3
            await admin.delete_records({tps[2]: RecordsToDelete(before_offset=3)})
        finally:
            await admin.close()

    asyncio.run(scenario())
    committed = asyncio.run(commit_start_offsets(kafka, group, [topics.events], topics.partitions))
    assert committed == {tps[0]: 0, tps[1]: 0, tps[2]: 3}
    assert asyncio.run(_committed(kafka, group, tps)) == [0, 0, 3]
    # Again: nothing is missing, nothing is touched.
    assert asyncio.run(commit_start_offsets(kafka, group, [topics.events], topics.partitions)) == {}


def test_existing_offsets_are_kept_and_a_running_group_is_left_alone(
    kafka: KafkaSettings, topics: TopicSettings, fresh: tuple[str, list[TopicPartition]]
) -> None:
    group, tps = fresh

    async def scenario() -> None:
        await _produce(kafka, topics.events, 0, 4)
        member = AIOKafkaConsumer(
            bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False
        )
        await member.start()
        try:
            member.subscribe([topics.events])
            await member.getmany(timeout_ms=3000)  # joined: the group has a member
            assert member.assignment()
            await member.commit({tps[0]: 4})
            # A second worker starting now must not commit over the running group's positions.
            assert (
                await commit_start_offsets(kafka, group, [topics.events], topics.partitions) == {}
            )
        finally:
            await member.stop()

    asyncio.run(scenario())
    assert asyncio.run(_committed(kafka, group, tps)) == [4, None, None]
    # Once the group is empty, only the partitions without an offset get one.
    committed = asyncio.run(commit_start_offsets(kafka, group, [topics.events], topics.partitions))
    assert committed == {tps[1]: 0, tps[2]: 0}
    assert asyncio.run(_committed(kafka, group, tps)) == [4, 0, 0]
