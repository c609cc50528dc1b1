"""Every record of a partition reaches the agent, in order: repairs to faust-streaming 0.15.3.

The stream worker's restart protocol (:mod:`streams.stream.processor`) skips a record whose offset
is at or below the last one applied to its user, so it needs each partition's records in offset
order without holes: a record that goes missing while a later one of the same partition is applied
would be skipped for good when it is read again. faust can lose records around a rebalance in two
ways (found by the integration tests, read from faust's source, confirmed with logging):

1. **Recovery clears what it just fetched** (``faust/tables/recovery.py``,
   ``Recovery.on_recovery_completed``). While the tables are rebuilt, the stream partitions are
   paused and the fetcher runs (it reads the changelogs). At the end faust resumes the stream
   partitions, awaits ``consumer.perform_seek()`` (to the committed offsets) and only then calls
   ``app.flow_control.resume()``, which *clears* the agents' input queues: records fetched after
   the seek are thrown away while the consumer's position is past them.
   :class:`OrderedRecovery` does the same steps in a safe order -- clear, seek, then resume the
   partitions (a paused partition is not fetched, so nothing reaches a queue in between).

2. **A fetch that straddles a seek delivers stale records** (``faust/transport/consumer.py``).
   The consumer thread's ``getmany`` may have fetched records before a seek and hand them over
   after it. faust then sees the offset jump (e.g. committed 218, next record 715), records the
   jump as a *gap* -- which its commit logic (``Consumer._new_offset``) counts as acknowledged --
   and later drops the re-fetched records below its read offset as old ("DROPPED MESSAGE ROFF").
   :class:`GaplessConsumer` keeps the next offset it expects per stream partition (set by every
   seek, advanced by every record; :class:`streams.stream.partition_order.PartitionOrder`); a record
   past it is not handed on: the partition is sought back to the expected offset and the rest of
   that fetch is dropped for it. The seek happens inside the fetch loop, between two fetches, so
   the next fetch starts after it; if that one still starts past the expected offset, the
   offsets really hold no records (transaction markers, retention) and the jump is accepted.
   A partition without a committed offset would have no expected offset after the seek (the
   reset policy picks its start, and a stale first record would be taken as the start), so the
   worker commits each partition's log start before its group starts
   (:mod:`streams.stream.group_offsets`): every stream partition has a known position.

3. **Records fetched but never handed on.** After a rebalance or a restart the driver's fetch
   position of a partition can stand at its end while this consumer has handed on records only
   up to some earlier offset: the records in between were taken from aiokafka's buffer and
   dropped before they got here. The path found: faust runs aiokafka in a thread of its own and
   hands it its live set of active partitions; a fetch it cancels at a rebalance keeps waiting
   there (up to 1 s) and takes the records of the partitions resumed meanwhile for nobody -- the
   stream partitions at the end of recovery, or the changelogs recovery reads (then recovery
   never finishes: seen once in a loop of the rebalance test, and once in CI last session).
   :meth:`GaplessConsumer._getmany` gives the thread a copy and narrows a cancelled fetch's copy
   to nothing. Whatever still gets lost is caught as follows. If no later record arrives, 2.
   never sees a jump and the partition is not read again: the CI failure of the kill -9 test
   (one partition's tail lost, its committed offset stuck for 45 s) and, in a loop of the
   rebalance test, the surviving worker's partitions in 5 of 11 runs (the watch below put them
   back after 20 s). faust calls getmany again only after handing on every record of the
   previous call, so at the start of a call (once a second) :class:`GaplessConsumer` compares
   the driver's fetch position with the expected offset
   (:meth:`streams.stream.partition_order.PartitionOrder.check_position`): past it, records were
   lost
   on the way and the partition is sought back to the expected offset. As a last line, a
   partition with records waiting that hands none on for ``STALL_AFTER_S`` (while faust is not
   recovering, rebalancing or pausing it) is logged with the consumer's view of it, put back
   into faust's active set and sought to its expected offset
   (:class:`streams.stream.partition_order.StallWatch`); a simulated stall (partition 2 dropped from
   faust's active set after 17 records) makes the kill -9 test lose that partition's tail as in
   CI, and passes with the watch.

Measured (tests/integration/test_stream_worker.py, rebalance and kill -9 tests, 2 busy cores):
before, the two-worker rebalance test lost records in 3 of 19 runs (5 of 8 with only repair 1 on a
busier machine). With both, 26 runs of both tests in a row passed while the consumer re-read a
partition 13 times (each a loss prevented); over later series the rebalance test still lost a few
events of one partition in 2 of about 50 runs under CPU contention, both in a partition that had
no committed offset yet when it changed hands -- closed by committing the log start up front.
(Asking the broker for the earliest offset from inside recovery instead -- ``seek_to_beginning``,
``beginning_offsets`` -- stalled the partition for good in a test.)

Install: ``faust.App(..., TableManager=OrderedTableManager)`` and
``app.transport.Consumer = GaplessConsumer`` before the app starts (see
:class:`streams.stream.app.StreamWorker`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.tables.manager import TableManager
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import Consumer
from faust.types import TP, Message

from streams.stream.partition_order import PartitionOrder, StallWatch, Verdict

log = logging.getLogger(__name__)

#: A stream partition with records waiting that hands none on for this long is read again (3.).
#: Far above what a healthy worker shows: faust holds a partition back only until the agent's
#: buffer drains, and a worker that cannot drain it for this long is stalled as a whole anyway.
STALL_AFTER_S = 20.0

#: What a cancelled fetch is left to take (see GaplessConsumer._getmany): nothing.
_NO_PARTITION = TP("", -1)


class OrderedRecovery(Recovery):
    """faust's ``Recovery`` whose last step clears and seeks before it resumes the partitions.

    A copy of faust-streaming 0.15.3's ``on_recovery_completed`` with its steps reordered (the
    pin in pyproject.toml keeps to 0.15.x): re-check it against faust's on any upgrade.
    """

    async def on_recovery_completed(self, generation_id: int = 0) -> None:
        """Call when active table recovery is completed (faust's steps, reordered: see 1.)."""
        app: Any = self.app
        consumer = app.consumer
        self.log.info("Restore complete!")
        await app.on_rebalance_complete.send()
        self._set_recovery_ended()
        callbacks = [
            asyncio.ensure_future(
                table.on_recovery_completed(
                    self.actives_for_table[table], self.standbys_for_table[table]
                )
            )
            for table in self.tables.values()
        ]
        if callbacks:
            await asyncio.wait(callbacks)
        assignment = consumer.assignment()
        if app.consumer_generation_id != generation_id:
            self.log.warning(
                f"Recovery rebalancing again app id {app.consumer_generation_id} "
                f"param {generation_id}"
            )
            return
        # The stream partitions are still paused: drop what the agents' queues hold from before,
        # seek to the committed offsets, and only then start fetching them.
        app.flow_control.resume()
        if assignment:
            self.log.info("Seek stream partitions to committed offsets.")
            await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
        consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
        self.completed.set()
        consumer.resume_flow()
        await app._fetcher.maybe_start()
        self.tables.on_actives_ready()
        if not app.assignor.assigned_standbys():
            self.tables.on_standbys_ready()
        app.on_rebalance_end()
        self.log.info("Worker ready")


class OrderedTableManager(TableManager):
    """faust's table manager, recovering with :class:`OrderedRecovery`."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = OrderedRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery


class GaplessConsumer(Consumer):
    """faust's aiokafka consumer that hands on each stream partition's records without holes
    (see 2.; the decision is :class:`streams.stream.partition_order.PartitionOrder`'s) and puts a
    partition that stopped being read back into the fetch (see 3.)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.order = PartitionOrder()
        self.watch = StallWatch(STALL_AFTER_S)
        self.clock: Callable[[], float] = time.monotonic
        self._next_watch = 0.0
        self._warned_positions = False

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:  # noqa: ASYNC109 (faust's signature)
        """faust's fetch in the consumer's thread, given a set of its own (see 3.).

        faust hands that thread its live set of active partitions. A fetch that faust cancels --
        a rebalance stops the fetch loop -- keeps waiting there for up to ``timeout`` and takes
        the records of whatever is resumed meanwhile (the changelogs a recovery reads, the
        stream partitions it resumes) for nobody. So the thread gets a copy, and a cancelled
        fetch's copy is narrowed to a partition that does not exist (never emptied: aiokafka
        reads an empty set as "all partitions").
        """
        if active_partitions is None:
            return await super()._getmany(None, timeout)
        wanted = set(active_partitions)
        try:
            return await super()._getmany(wanted, timeout)
        except asyncio.CancelledError:
            wanted.add(_NO_PARTITION)
            wanted.intersection_update({_NO_PARTITION})
            raise

    def repairs(self) -> dict[str, int]:
        """Running totals of the repairs: re-reads of stale fetches, accepted jumps, stalls."""
        return {"refetch": self.order.refetches, "gap": self.order.gaps, "stall": self.watch.stalls}

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:  # noqa: ASYNC109 (faust's signature)
        now = self.clock()
        if now >= self._next_watch:  # faust's fetch loop calls this at least once a second
            self._next_watch = now + 1.0
            if self.flow_active and not self.app.in_recovery:
                await self._read_lost_again()
            await self._resume_stalled(now)
        stale: set[TP] = set()
        changelogs = self.app.tables.changelog_topics
        async for tp, message in super().getmany(timeout):
            if tp.topic in changelogs:
                yield tp, message  # faust reads changelogs up to their highwater itself
                continue
            if tp in stale:
                continue
            verdict, seek_to = self.order.check(tp, message.offset)
            if verdict is Verdict.REFETCH:
                assert seek_to is not None
                log.warning(
                    "%s:%d: got offset %d, expected %d: reading again from %d",
                    tp.topic, tp.partition, message.offset, seek_to, seek_to,
                )  # fmt: skip
                stale.add(tp)
                await self._read_again(tp, seek_to)
                continue
            if verdict is Verdict.GAP:
                log.info("%s:%d: offsets before %d hold no records", *tp, message.offset)
            self.watch.progress(tp, now)
            yield tp, message

    async def _read_lost_again(self) -> None:
        """Seek back the stream partitions whose records were fetched but never reached this
        loop (see 3.). faust's fetch loop calls getmany again only after it has handed on every
        record of the previous call, so at this point the driver's fetch position is one past
        the last record handed on -- unless records were lost on the way. Once a second: the
        loss is rare, and a busy worker fetches hundreds of times a second."""
        for tp, position in self.fetch_positions().items():
            if self._held_by_faust(tp):
                continue
            verdict, seek_to = self.order.check_position(tp, position)
            if verdict is Verdict.REFETCH:
                assert seek_to is not None
                log.warning(
                    "%s:%d: fetched up to offset %d but handed on only up to %d: records lost "
                    "on the way, reading again from %d",
                    tp.topic, tp.partition, position - 1, seek_to - 1, seek_to,
                )  # fmt: skip
                await self._read_again(tp, seek_to)
            elif verdict is Verdict.GAP:
                log.info("%s:%d: offsets before %d hold no records", *tp, position)

    def fetch_positions(self) -> dict[TP, int]:
        """The driver's fetch position of each assigned partition that has one.

        aiokafka has no synchronous way to read it, so this reads its subscription state (plain
        integers, set in the consumer's thread); a rebalance in between just yields fewer.
        """
        driver = self._thread._consumer
        if driver is None:  # not started
            return {}
        subscriptions = getattr(driver, "_subscription", None)
        if subscriptions is None or not hasattr(subscriptions, "subscription"):
            if not self._warned_positions:  # an aiokafka that keeps them elsewhere
                self._warned_positions = True
                log.warning("cannot read aiokafka's fetch positions: lost records are caught late")
            return {}
        assignment = getattr(subscriptions.subscription, "assignment", None)
        if assignment is None:
            return {}
        positions = {}
        for tp in list(assignment.tps):
            tp_state = assignment.state_value(tp)
            if tp_state.has_valid_position:
                positions[TP(tp.topic, tp.partition)] = tp_state.position
        return positions

    async def _resume_stalled(self, now: float) -> None:
        """Put the stream partitions that stopped being read back into the fetch (see 3.)."""
        waiting: dict[TP, tuple[int, int]] = {}
        if not self.app.in_recovery and self.flow_active:
            for tp in self.assignment():
                expected = self.order.expected(tp)
                if expected is None or self._held_by_faust(tp):
                    continue
                try:
                    end = self.highwater(tp)  # as of the partition's last fetch
                except (AssertionError, IllegalStateError):  # aiokafka: revoked meanwhile
                    continue
                if end is not None and end > expected:
                    waiting[tp] = (expected, end)
        for tp in self.watch.stalled(waiting, now):
            expected, end = waiting[tp]
            active = self._get_active_partitions()
            log.warning(
                "%s:%d: offsets %d..%d wait and none was read for %.0f s (in faust's fetch: %s, "
                "held back for a full buffer: %s): putting it back, reading again from %d",
                tp.topic, tp.partition, expected, end - 1, self.watch.after_s,
                tp in active, tp in self._buffered_partitions, expected,
            )  # fmt: skip
            active.add(tp)
            self._buffered_partitions.discard(tp)
            await self._read_again(tp, expected)

    async def _read_again(self, tp: TP, offset: int) -> None:
        # seek_wait runs the seek in the consumer's thread (faust's plain ``seek`` touches
        # aiokafka from this one), then waits for the position. A rebalance can get in the way
        # (the partition revoked meanwhile: aiokafka raises; a slow one: the wait times out).
        # This runs in faust's fetch loop, and an exception there ends the loop and crashes the
        # worker (it exits: checked by raising one from getmany), so it is logged instead: a
        # revoked partition is sought by its next owner's recovery, and the seek itself is done
        # before the wait.
        try:
            await self.seek_wait({tp: offset})
        except Exception as exc:
            log.warning("%s:%d: seek to %d interrupted: %r", tp.topic, tp.partition, offset, exc)
            self._expect(tp, offset)

    async def seek(self, partition: TP, offset: int) -> None:
        await super().seek(partition, offset)
        self._expect(partition, offset)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        await super().seek_wait(partitions)
        for tp, offset in partitions.items():
            self._expect(tp, offset)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        for tp, offset in list(self._read_offset.items()):
            self._expect(tp, offset)
            if offset is None and not self._is_changelog_tp(tp) and not self._is_leader_tp(tp):
                # streams.stream.group_offsets commits every partition's start before the group
                # starts; a partition added later has none: its first record is taken as it
                # comes. (Asking the broker for its start from here stalled it in tests.)
                log.warning("%s:%d has no committed offset: its first record is not checked", *tp)

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.order.forget(revoked)
        self.watch.forget(revoked)
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        # A partition that comes back is sought by recovery before it is read again.
        self.order.forget(set(self._read_offset) - set(assigned))
        self.watch.forget(set(self._read_offset) - set(assigned))
        await super().on_partitions_assigned(assigned, generation_id)

    def _held_by_faust(self, tp: TP) -> bool:
        # A changelog (faust's recovery reads it up to its highwater itself) or a partition
        # faust paused on purpose (recovery, a rebalance): neither check of 3. applies.
        return tp in self._paused_partitions or self._is_changelog_tp(tp)

    def _is_leader_tp(self, tp: Any) -> bool:
        # faust's assignor topic (``<app>-__assignor-__leader``): no records, never committed.
        return tp.topic in self.randomly_assigned_topics

    def _expect(self, tp: Any, offset: int | None) -> None:
        tp = TP(tp.topic, tp.partition)
        if not self._is_changelog_tp(tp):
            self.order.seek(tp, offset)
            self.watch.progress(tp, self.clock())
