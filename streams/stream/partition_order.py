"""Is this record the next one of its partition? The decision behind
:class:`streams.stream.faust_ordering.GaplessConsumer`, kept apart from faust so it can be tested
alone.

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
from typing import TypeVar

P = TypeVar("P", bound=Hashable)


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

    def check_position(self, partition: Hashable, position: int) -> tuple[Verdict, int | None]:
        """The verdict on the consumer's fetch position, taken when every record it fetched so
        far has been handed on: past the expected offset, records were fetched and lost on the
        way (``REFETCH`` from the expected offset); past it again right after that re-read, the
        offsets in between hold no records (``GAP``: the expected offset moves up to it).

        >>> order = PartitionOrder()
        >>> order.seek("p0", 10)
        >>> order.check_position("p0", 10)
        (<Verdict.PASS: 'pass'>, None)
        >>> order.check_position("p0", 25)  # 10..24 fetched, none handed on
        (<Verdict.REFETCH: 'refetch'>, 10)
        """
        expected = self._expected.get(partition)
        if expected is None or position <= expected:
            return Verdict.PASS, None
        if self._verifying.get(partition) != expected:
            self.refetches += 1
            self._verifying[partition] = expected
            return Verdict.REFETCH, expected
        self.gaps += 1
        self._verifying.pop(partition, None)
        self._expected[partition] = position
        return Verdict.GAP, None


class StallWatch:
    """Which partitions have records waiting but have handed none on for ``after_s`` seconds.

    Why: the last line of :mod:`streams.stream.faust_ordering`'s repair 3. A partition can stop
    being
    read while its records wait (the CI failure of the kill -9 test: a partition's committed
    offset stuck for 45 s while the others were read to their end). The cause found -- records
    fetched and never handed on -- is caught at once by :meth:`PartitionOrder.check_position`;
    this catches whatever else leaves a partition unread (e.g. faust leaving it out of its
    "active" set: aiokafka does not fetch a partition again while records of it wait in its
    buffer). The consumer asks :meth:`stalled` about once a second with the partitions that have
    records past their next expected offset and puts back the ones it names.

    The clock of a partition runs while it is waiting and nothing of it is handed on: it restarts
    at every record handed on (:meth:`progress`) and whenever the partition is not waiting (no
    records past its position, or paused on purpose), so a partition idle for an hour and then
    sent one record is not taken for stalled. Only a partition seen waiting by every check over
    ``after_s`` is stalled: checks more than ``gap_s`` apart mean the consumer was not fetching at
    all (a rebalance, a fetch loop blocked on a full buffer), which is not one partition's stall,
    and every clock starts afresh.

    >>> watch = StallWatch(after_s=20)
    >>> for now in range(21):  # the consumer checks about once a second
    ...     if now <= 15:
    ...         watch.progress("p0", now)  # p0 hands records on until 15, p1 none
    ...     stalled = watch.stalled({"p0", "p1"}, now)
    >>> stalled
    ['p1']
    >>> watch.stalled({"p0", "p1"}, now=21)  # named once per after_s
    []
    """

    def __init__(self, after_s: float, gap_s: float | None = None) -> None:
        self.after_s = after_s
        self.gap_s = after_s / 4 if gap_s is None else gap_s
        self._since: dict[Hashable, float] = {}
        self._waiting: set[Hashable] = set()  # as of the last call of stalled()
        self._checked_at: float | None = None
        self.stalls = 0

    def progress(self, partition: Hashable, now: float) -> None:
        """A record of the partition was handed on (or it was sought): its clock restarts."""
        self._since[partition] = now

    def forget(self, partitions: Iterable[Hashable]) -> None:
        """The partitions are no longer assigned."""
        for partition in partitions:
            self._since.pop(partition, None)
            self._waiting.discard(partition)

    def stalled(self, waiting: Iterable[P], now: float) -> list[P]:
        """Of ``waiting`` (partitions with records past their position, fetching not paused on
        purpose), those that have handed nothing on for ``after_s``; their clocks restart."""
        candidates = set(waiting)
        if self._checked_at is not None and now - self._checked_at > self.gap_s:
            self._waiting = set()  # not watched in between: nobody has been waiting "since"
        self._checked_at = now
        stalled: list[P] = []
        for partition in candidates:
            since = self._since.get(partition)
            if since is None or partition not in self._waiting:
                self._since[partition] = now  # starts waiting now
            elif now - since >= self.after_s:
                stalled.append(partition)
                self._since[partition] = now
        self._waiting = set(candidates)
        self.stalls += len(stalled)
        return sorted(stalled, key=repr)
