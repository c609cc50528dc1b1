"""Give every source partition of a consumer group a committed offset before the group starts.

Why: a partition without a committed offset starts wherever the reset policy puts the consumer,
and nothing downstream can tell whether the first record it hands on is really the first one not
yet applied. With faust-streaming 0.15.3 that is a way to lose records in a brand-new group:
records fetched before a rebalance can be handed on after it (a fetch straddling the seek), the
worker takes the first of them as the partition's start, faust commits from there (its
``Consumer._new_offset`` checks for a hole only against a committed offset), and the records
before it -- e.g. the ones faust dropped from its queues at the revocation -- are never applied.
:class:`streams.stream.faust_ordering.GaplessConsumer` catches such a jump whenever it knows the
offset
the partition was sought to, i.e. whenever the group has committed one.

So before a stream worker joins its group, :func:`commit_start_offsets` commits each partition's
log start offset where the group has none (the same position ``auto_offset_reset=earliest``
would pick, only now explicit). The broker accepts such a commit only while the group has no
members; when another worker is already in the group, that worker did it before it joined.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CommitFailedError, KafkaError

from streams.settings import KafkaSettings
from streams.topics import admin_client

log = logging.getLogger(__name__)


async def commit_start_offsets(
    kafka: KafkaSettings, group_id: str, topics: Sequence[str], partitions: int
) -> dict[TopicPartition, int]:
    """Commit the log start offset of each partition ``0..partitions-1`` of ``topics`` that has no
    committed offset in ``group_id``; return what was committed (empty: nothing was missing, or
    the group is running and its members own the positions)."""
    wanted = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    async with admin_client(kafka) as admin:
        missing = await _without_offset(admin, group_id, wanted)
        if not missing:
            return {}
        consumer = AIOKafkaConsumer(
            group_id=group_id, enable_auto_commit=False, **kafka.client_kwargs()
        )
        await consumer.start()
        try:
            starts: dict[TopicPartition, int] = await consumer.beginning_offsets(missing)
            # aiokafka commits only assigned partitions; assign() joins no group, and paused
            # partitions are not fetched.
            consumer.assign(missing)
            consumer.pause(*missing)
            await consumer.commit(starts)
        except CommitFailedError:
            # Members joined meanwhile; each committed before joining. One that did not (an
            # older version) leaves these partitions to the reset policy: say so.
            left = await _without_offset(admin, group_id, missing)
            if left:
                log.warning(
                    "group %s is running and has no committed offset for %s: those partitions "
                    "start where the reset policy puts them",
                    group_id, ", ".join(f"{tp.topic}:{tp.partition}" for tp in left),
                )  # fmt: skip
            return {}
        finally:
            await consumer.stop()
    log.info(
        "group %s: committed the log start of %d partitions without an offset",
        group_id, len(starts),
    )  # fmt: skip
    return starts


async def _without_offset(
    admin: AIOKafkaAdminClient, group_id: str, tps: list[TopicPartition], wait_s: float = 30.0
) -> list[TopicPartition]:
    """The partitions of ``tps`` the group has no committed offset for.

    On a broker that has just started, the group's coordinator is not ready yet (Kafka creates
    its offsets topic on first use) and the admin client does not retry: retriable errors are
    asked again for up to ``wait_s``.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            committed = await admin.list_consumer_group_offsets(group_id, partitions=tps)
        except KafkaError as exc:
            if not exc.retriable or time.monotonic() >= deadline:
                raise
            log.info("group %s: coordinator not ready (%s), asking again", group_id, exc)
            await asyncio.sleep(0.2)
            continue
        return [tp for tp in tps if tp not in committed or committed[tp].offset < 0]
