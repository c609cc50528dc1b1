"""Reading a group's offsets on a broker whose group coordinator is not ready yet
(streams.stream.group_offsets; the rest is tested on the real broker in tests/integration)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import GroupAuthorizationFailedError, GroupCoordinatorNotAvailableError
from aiokafka.structs import OffsetAndMetadata

from streams.stream.group_offsets import _without_offset

TPS = [TopicPartition("events", 0), TopicPartition("events", 1)]


class _Admin:
    """Fails with ``errors`` first, then answers partition 0's offset."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = errors
        self.calls = 0

    async def list_consumer_group_offsets(
        self, group_id: str, partitions: list[TopicPartition]
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {TPS[0]: OffsetAndMetadata(7, ""), TPS[1]: OffsetAndMetadata(-1, "")}


def test_a_coordinator_that_is_not_ready_yet_is_asked_again() -> None:
    admin = _Admin([GroupCoordinatorNotAvailableError(), GroupCoordinatorNotAvailableError()])
    assert asyncio.run(_without_offset(admin, "g", TPS)) == [TPS[1]]
    assert admin.calls == 3


def test_errors_that_will_not_pass_and_a_coordinator_that_never_comes_are_raised() -> None:
    with pytest.raises(GroupAuthorizationFailedError):
        asyncio.run(_without_offset(_Admin([GroupAuthorizationFailedError()]), "g", TPS))
    never = _Admin([GroupCoordinatorNotAvailableError()] * 100)
    with pytest.raises(GroupCoordinatorNotAvailableError):
        asyncio.run(_without_offset(never, "g", TPS, wait_s=0.3))
