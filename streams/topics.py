"""Create the service's topics if they are missing (idempotent, safe on a shared cluster)."""

from __future__ import annotations

import contextlib
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from streams.settings import KafkaSettings, TopicSettings

log = logging.getLogger(__name__)


class KafkaUnavailable(RuntimeError):
    """The brokers in INTEREST_KAFKA_BOOTSTRAP could not be reached; one line for the CLI."""


def unreachable(kafka: KafkaSettings, exc: BaseException) -> KafkaUnavailable:
    return KafkaUnavailable(
        f"cannot reach Kafka at {kafka.bootstrap} ({exc}); "
        "start the local broker with `interest-stream broker start` or set INTEREST_KAFKA_BOOTSTRAP"
    )


async def ensure_topics(
    kafka: KafkaSettings, topics: TopicSettings, names: tuple[str, ...] | None = None
) -> list[str]:
    """Create ``names`` (default: all service topics) where missing; return those created."""
    wanted = names or topics.all()
    admin = AIOKafkaAdminClient(**kafka.client_kwargs())
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        raise unreachable(kafka, exc) from exc
    try:
        existing = set(await admin.list_topics())
        missing = [n for n in wanted if n not in existing]
        if not missing:
            return []
        new = [
            NewTopic(
                n, num_partitions=topics.partitions, replication_factor=topics.replication_factor
            )
            for n in missing
        ]
        with contextlib.suppress(TopicAlreadyExistsError):  # another worker won the race
            await admin.create_topics(new)
        log.info("created topics %s with %d partitions", missing, topics.partitions)
        return missing
    finally:
        await admin.close()
