"""Is this record the next one of its partition? The decision behind
:class:`streams.faust_ordering.GaplessConsumer`, kept apart from faust so it can be tested alone.

A consumer hands on a partition's records in offset order. After a seek to ``o`` the next record
is ``o`` (or the first existing offset above it); after record ``o`` it is ``o + 1``. A record past
that point means records in between were lost on the way or the fetch is older than the last
seek: the consumer should read the partition again from the expected offset (``REFETCH``) and
drop the rest of that fetch for the partition. If the first record read after that seek is still
past the expected offset, the offsets in between hold no records (transaction markers, retention,
compaction) and the jump is accepted (``GAP``). A record below the expected offset is a re-read
one: it is handed on (``PASS``) and the expected offset stays.

>>> order = PartitionOrder()
>>> order.seek("p0", 10)
>>> order.check("p0", 10), order.check("p0", 11)
((<Verdict.PASS: 'pass'>, None), (<Verdict.PASS: 'pass'>, None))
>>> order.check("p0", 15)  # 12..14 missing: read again from 12
(<Verdict.REFETCH: 'refetch'>, 12)
>>> order.seek("p0", 12)
>>> order.check("p0", 12)
(<Verdict.PASS: 'pass'>, None)
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from enum import Enum


class Verdict(Enum):
    PASS = "pass"
    """The expected record (or a re-read one below it): hand it on."""
    GAP = "gap"
    """Past the expected offset again after a re-read: those offsets hold no records."""
    REFETCH = "refetch"
    """Past the expected offset: seek back to the returned offset, drop the rest of this fetch."""


class PartitionOrder:
    """The next offset expected per partition (any hashable key), fed by seeks and records."""

    def __init__(self) -> None:
        self._expected: dict[Hashable, int] = {}
        self._verifying: dict[Hashable, int] = {}  # sought back to this offset, not yet read
        self.refetches = 0
        self.gaps = 0

    def seek(self, partition: Hashable, offset: int | None) -> None:
        """The consumer was sought to ``offset`` (None: unknown, e.g. the reset policy decides).

        The seek that follows ``REFETCH`` (to the offset it returned) keeps the partition under
        verification; any other seek starts afresh.
        """
        if self._verifying.get(partition) != offset:
            self._verifying.pop(partition, None)
        if offset is None:
            self._expected.pop(partition, None)
        else:
            self._expected[partition] = offset

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """The partitions are no longer assigned."""
        for partition in partitions:
            self._expected.pop(partition, None)
            self._verifying.pop(partition, None)

    def expected(self, partition: Hashable) -> int | None:
        return self._expected.get(partition)

    def check(self, partition: Hashable, offset: int) -> tuple[Verdict, int | None]:
        """The verdict on a fetched record; with ``REFETCH`` also the offset to seek to.

        After ``REFETCH`` the caller seeks (and reports it with :meth:`seek`) and drops the rest
        of the fetch for this partition without asking: those records are stale too.
        """
        expected = self._expected.get(partition)
        verdict = Verdict.PASS
        if expected is not None and offset > expected:
            if self._verifying.get(partition) != expected:
                self.refetches += 1
                self._verifying[partition] = expected
                return Verdict.REFETCH, expected
            self.gaps += 1
            verdict = Verdict.GAP
        self._verifying.pop(partition, None)
        if expected is None or offset >= expected:
            self._expected[partition] = offset + 1
        return verdict, None
