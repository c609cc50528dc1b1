"""Topic creation on the real broker: service topics, the compacted popularity topic, and the
stream worker's co-partitioned internal topics."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.settings import KafkaSettings, TopicSettings
from streams.topics import (
    PartitionMismatch,
    ensure_copartitioned,
    ensure_popularity_topic,
    ensure_topics,
)

pytestmark = pytest.mark.integration


async def _describe(kafka: KafkaSettings, name: str) -> tuple[int, dict[str, Any]]:
    """(partition count, topic configs) of ``name``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        (meta,) = await admin.describe_topics([name])
        (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
        (resource,) = response.resources
        configs = {entry[0]: entry[1] for entry in resource[4]}
        return len(meta["partitions"]), configs
    finally:
        await admin.close()


def test_service_topics_are_created_once(kafka: KafkaSettings, topics: TopicSettings) -> None:
    created = asyncio.run(ensure_topics(kafka, topics))
    assert sorted(created) == sorted(topics.all())
    assert asyncio.run(ensure_topics(kafka, topics)) == []  # idempotent
    partitions, configs = asyncio.run(_describe(kafka, topics.events))
    assert partitions == topics.partitions
    assert configs["cleanup.policy"] == "delete"


def test_popularity_topic_is_compacted(kafka: KafkaSettings, topics: TopicSettings) -> None:
    asyncio.run(ensure_popularity_topic(kafka, topics))
    asyncio.run(ensure_popularity_topic(kafka, topics))  # either worker may come first
    partitions, configs = asyncio.run(_describe(kafka, topics.popularity))
    assert partitions == topics.partitions
    assert configs["cleanup.policy"] == "compact"


def test_internal_topics_follow_the_events_topic(
    kafka: KafkaSettings, topics: TopicSettings
) -> None:
    events_only = topics.model_copy(update={"partitions": 5})
    asyncio.run(ensure_topics(kafka, events_only, (topics.events,)))
    repartition = f"{topics.events}.repartition"
    # Created like the events topic (5 partitions), not like INTEREST_TOPICS_PARTITIONS (3).
    assert asyncio.run(ensure_copartitioned(kafka, topics, [repartition], [])) == 5
    assert asyncio.run(_describe(kafka, repartition))[0] == 5

    changelog = f"{topics.events}.state-changelog"

    async def make_changelog() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(changelog, 2, 1)])
            # The broker lists a new topic a moment after creating it (its metadata cache
            # catches up); the check below looks at listed topics.
            deadline = time.monotonic() + 15
            while changelog not in await admin.list_topics():
                assert time.monotonic() < deadline, f"{changelog} never listed"
                await asyncio.sleep(0.1)
        finally:
            await admin.close()

    asyncio.run(make_changelog())
    with pytest.raises(PartitionMismatch, match=f"{changelog} has 2 partitions but"):
        asyncio.run(ensure_copartitioned(kafka, topics, [repartition], [changelog]))
