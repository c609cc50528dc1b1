"""Forgetting a user: ``interest-stream user delete`` and the API's ``DELETE /v1/users/{id}``.

The request is a control record on ``interest.events`` (:mod:`streams.contracts.control`), keyed
by the user like the user's events; the stream worker deletes the user's state (a tombstone on
its changelog) and emits a delete job, and the embed worker deletes the user's point. Going
through the log rather than around it is what makes it final: events the user sent before the
request are forgotten wherever they are in the pipeline, a restart or a replay meets the request
again at the same place, and events after it start a new profile.

:func:`wait_applied` tells when both workers are done: the stream group has committed past the
request, and then the embed group has consumed its updates partitions up to where they ended at
that moment -- the delete job is among what it consumed.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass

from aiokafka.errors import KafkaError

from streams.contracts.control import check_user_id, delete_user_record
from streams.lag import LagReader
from streams.publish import EventPublisher
from streams.settings import IntakeSettings, KafkaSettings, TopicSettings
from streams.topics import unreachable


@dataclass(frozen=True, slots=True)
class DeleteReceipt:
    """Where a delete request was written: the events topic, partition and offset."""

    user_id: str
    topic: str
    partition: int
    offset: int
    requested_at_ms: int

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


class DeleteNotApplied(TimeoutError):
    """The workers did not apply a delete request in time (it stays on the topic and applies
    when they run)."""


async def request_delete(publisher: EventPublisher, user_id: str, by: str) -> DeleteReceipt:
    """Write the delete request for ``user_id`` (acknowledged by all in-sync replicas).

    Raises :class:`~streams.contracts.events.InvalidEvent` (``bad_control``) for a user id no
    event could carry, before anything is written.
    """
    check_user_id(user_id, publisher.rules.max_user_id_chars)
    now_ms = int(time.time() * 1000)
    key, value, headers = delete_user_record(user_id, now_ms=now_ms, by=by)
    topic = publisher.topics.events
    try:
        meta = await publisher.producer.send_and_wait(topic, value, key=key, headers=headers)
    except KafkaError as exc:
        raise unreachable(publisher.kafka, exc) from exc
    return DeleteReceipt(user_id, topic, meta.partition, meta.offset, now_ms)


async def wait_applied(
    receipt: DeleteReceipt,
    kafka: KafkaSettings,
    *,
    stream_group: str,
    embed_group: str,
    updates_topic: str,
    timeout_s: float,
    poll_s: float = 0.5,
) -> float:
    """Wait until the stream and embed workers have applied ``receipt``; return the seconds
    waited. Raises :class:`DeleteNotApplied` after ``timeout_s``."""
    started = time.monotonic()
    deadline = started + timeout_s
    async with LagReader(kafka) as reader:
        # 1. The stream worker: its group's committed offset is past the request.
        while True:
            (sample,) = await reader.read([stream_group])
            committed = {
                p.partition: p.committed for p in sample.partitions if p.topic == receipt.topic
            }
            done = committed.get(receipt.partition)
            if done is not None and done > receipt.offset:
                break
            _check_deadline(deadline, "the stream worker has not read the request yet")
            await asyncio.sleep(poll_s)
        # 2. The embed worker: everything on the updates topic up to now (the delete job was
        # sent before step 1's commit) is consumed.
        (sample,) = await reader.read([embed_group])
        targets = {p.partition: p.log_end for p in sample.partitions if p.topic == updates_topic}
        while True:
            consumed = {
                p.partition: p.committed for p in sample.partitions if p.topic == updates_topic
            }
            if targets and all(
                end is None or (consumed.get(p) or 0) >= end for p, end in targets.items()
            ):
                return time.monotonic() - started
            _check_deadline(deadline, "the embed worker has not applied the delete job yet")
            await asyncio.sleep(poll_s)
            (sample,) = await reader.read([embed_group])


def _check_deadline(deadline: float, what: str) -> None:
    if time.monotonic() > deadline:
        raise DeleteNotApplied(what)


def delete_user(
    user_id: str,
    *,
    wait_s: float | None,
    stream_group: str,
    embed_group: str,
    kafka: KafkaSettings | None = None,
    topics: TopicSettings | None = None,
) -> tuple[DeleteReceipt, float | None]:
    """Blocking, for the CLI: request the delete and, with ``wait_s``, wait for the workers.
    Returns the receipt and the seconds waited (None without waiting)."""
    kafka = kafka or KafkaSettings()
    topics = topics or TopicSettings()

    async def run() -> tuple[DeleteReceipt, float | None]:
        publisher = EventPublisher(kafka, topics, IntakeSettings().rules())
        async with publisher:
            receipt = await request_delete(publisher, user_id, by="cli")
        if wait_s is None:
            return receipt, None
        waited = await wait_applied(
            receipt,
            kafka,
            stream_group=stream_group,
            embed_group=embed_group,
            updates_topic=topics.updates,
            timeout_s=wait_s,
        )
        return receipt, waited

    return asyncio.run(run())
