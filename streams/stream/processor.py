"""The stream worker's logic, independent of faust: batches of records in, update jobs out.

Per record (:meth:`StreamProcessor.process_batch`): validate (bad input -> DLQ with a reason,
never a crash); make sure the record sits in its user's partition ``murmur2(user_id) % N``
(otherwise re-key it to the repartition topic, which the same agent consumes); apply it to the
user's state (numbering, dedupe, pending, activity -- :mod:`streams.stream.userstate`). Per batch,
ask
the trigger policy (:mod:`streams.stream.triggers`) which users are due and emit one
:class:`~streams.contracts.jobs.UpdateJob` per due user. The timer
(:meth:`StreamProcessor.flush_due`)
flushes idle users whose oldest pending event is about to exceed max_delay (counted from the
record's Kafka timestamp). New events with an item and a positive weight are also summed per
item for the batch and sent to the item repartition topic (:mod:`streams.stream.popularity`).
A delete request (a control record, :mod:`streams.contracts.control`) deletes the user's state
-- with what this batch applied before it -- and, once the tombstone is durable, emits a delete
job ahead of the batch's update jobs; the user's later events are numbered from 1 again.
:mod:`streams.stream.app` feeds it from faust; the tests feed it fakes.

Restart safety (kill -9 at any point loses no event and never renumbers one):
    1. apply a batch, write each touched user's state once (numbers, offsets, pending);
    2. if any user is due: barrier -- ``producer.flush()``, so those states are in the changelog;
    3. send the jobs and await their delivery;
    4. drop the delivered events from pending; that state goes to the changelog lazily (with the
       user's next batch, within ``persist_interval_s``, before a revocation, at shutdown);
    5. ack the batch's events (faust commits them at the next commit, after a producer flush).
A job therefore never leaves before the numbering it carries is durable, whatever a replay would
decide differently (a clock that moved on, changed settings, re-keyed records interleaving). A
crash between 3 and the write of 4 re-emits the same events with the same numbers (the embed worker
drops n <= its seq). A crash before the commit replays records; those at or below the offset
stored in the user's state are skipped exactly. The timer runs 2-4 for idle users under the same
lock as the agent, and only for partitions this worker owns; on revocation it finishes under the
lock, writes everything and flushes the producer before faust hands the partitions over.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from streams.contracts.control import DELETE_USER, control_of, parse_delete_user
from streams.contracts.dlq import DeadLetter, kafka_source
from streams.contracts.events import DEFAULT_RULES, EventRules, InvalidEvent, parse_event
from streams.contracts.jobs import DeleteUserJob
from streams.stream.popularity import Contributions
from streams.stream.table_owner import StateStore, TableOwner
from streams.stream.triggers import FlushLead, FlushReason, TriggerPolicy
from streams.stream.types import Headers, Record, Sink, StreamStats, Topics, partition_for
from streams.stream.userstate import (
    Applied,
    StateLimits,
    UserState,
    has_pending,
)

#: Index of each source topic in a state's per-source offsets (streams.stream.userstate.SOURCES).
SOURCE_EVENTS = 0
SOURCE_REPARTITION = 1


def dlq_record(
    rec: Record, raw: bytes, *, reason: str, detail: str, now_ms: int
) -> tuple[bytes | None, bytes, Headers]:
    """The DLQ key and value (the original bytes, cut at streams.contracts.dlq.MAX_CARRIED) and
    headers of a rejected record (streams.contracts.dlq)."""
    letter = DeadLetter(
        key=rec.key,
        value=raw,
        reason=reason,
        detail=detail,
        source=kafka_source(rec.topic, rec.partition, rec.offset),
        stage="stream",
        ts_ms=now_ms,
    )
    return letter.carried_key(), letter.carried_value(), letter.headers()


@dataclass
class _Due:
    key: bytes
    user_id: str
    state: UserState
    reason: FlushReason


class StreamProcessor(TableOwner):
    """Batches in, jobs out: the worker's logic, independent of faust (which feeds it)."""

    def __init__(
        self,
        *,
        store: StateStore,
        sink: Sink,
        partitions: int,
        policy: TriggerPolicy,
        limits: StateLimits,
        rules: EventRules = DEFAULT_RULES,
        topics: Topics = Topics(),
        clock: Callable[[], float] = time.time,
        popularity_half_life_s: float | None = None,
    ) -> None:
        super().__init__(store, sink)
        self.store: StateStore = store
        self.sink: Sink = sink
        self.partitions = partitions
        self.policy = policy
        self.limits = limits
        self.rules = rules
        self.topics = topics
        self.clock = clock
        self.stats = StreamStats()
        #: How much earlier to flush on age, learned from this worker's late deliveries.
        self.lead = FlushLead(policy)
        self._last_tick_ms = 0
        self._heap: list[tuple[int, bytes]] = []
        self._scheduled: dict[bytes, int] = {}
        #: Decoded states of the users with pending events (the ones the timer will flush), so
        #: neither the next batch nor the timer decodes them again. Always equal to the table.
        self._hot: dict[bytes, UserState] = {}
        #: Where the idle sweep (:meth:`compact_idle`) goes on: a partition, the last key seen.
        self._sweep_partition = -1
        self._sweep_after: bytes | None = None
        #: This batch's item counts (None: popularity off); see streams.stream.popularity.
        self._items = (
            Contributions(popularity_half_life_s)
            if popularity_half_life_s is not None and topics.items
            else None
        )

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _item_partition(self, key: bytes) -> int:
        return partition_for(key, self.partitions)

    def _load(self, key: bytes) -> UserState:
        state = self._hot.get(key)
        if state is not None:
            return state
        raw = self.store.get(key)
        return UserState() if raw is None else UserState.from_bytes(raw)

    def _save(self, key: bytes, state: UserState, *, lazy: bool = False) -> None:
        if lazy:
            self.store.set_lazy(key, state.to_bytes())
        else:
            self.store.set(key, state.to_bytes())
        if state.pending:
            self._hot[key] = state
        else:
            self._hot.pop(key, None)

    # -- the agent's side ---------------------------------------------------------------------

    async def process_batch(self, records: Sequence[Record]) -> None:
        """Apply a batch and emit the jobs of due users. On return the batch may be acked: its
        jobs, dead letters and re-keyed records are delivered, its state writes are with the
        producer (which faust flushes before it commits the offsets)."""
        async with self.lock:
            now = self._now_ms()
            sends: list[Awaitable[Any]] = []
            touched: dict[bytes, tuple[str, UserState]] = {}
            deletes: list[DeleteUserJob] = []
            for rec in records:
                await self._route(rec, now, touched, sends, deletes)
            due: list[_Due] = []
            for key, (user_id, state) in touched.items():
                self._save(key, state)
                reason = self.policy.decide(state.view(), now, self.lead.get())
                if reason is not None:
                    due.append(_Due(key, user_id, state, reason))
            await self.store.write_back()
            if due or deletes:
                await self._emit(due, now, deletes=deletes)
            for key, (_user_id, state) in touched.items():
                self._schedule(key, state)
            if self._items:
                # After the state writes (above), so that a replay finds these events applied
                # unless the crash also lost the state writes (streams.stream.popularity:
                # "Exactness").
                for partition, value in self._items.drain(self._item_partition):
                    sends.append(
                        await self.sink.send(self.topics.items, None, value, partition=partition)
                    )
            if sends:
                await asyncio.gather(*sends)
            self.stats.batches += 1

    async def _route(
        self,
        rec: Record,
        now: int,
        touched: dict[bytes, tuple[str, UserState]],
        sends: list[Awaitable[Any]],
        deletes: list[DeleteUserJob],
    ) -> None:
        self.stats.records += 1
        raw = rec.value if rec.value is not None else b""
        try:
            if control_of(rec.headers) == DELETE_USER:
                await self._delete_user(rec, raw, now, touched, sends, deletes)
                return
            event = parse_event(raw, now_ms=now, rules=self.rules)
        except InvalidEvent as exc:
            sends.append(await self._dead_letter(rec, raw, exc, now))
            return
        key = event.user_id.encode()
        partition = partition_for(key, self.partitions)
        if partition != rec.partition:
            sends.append(await self._forward(rec, key, raw, partition))
            return
        entry = touched.get(key)
        if entry is None:
            entry = touched[key] = (event.user_id, self._load(key))
        state = entry[1]
        source = SOURCE_REPARTITION if rec.topic == self.topics.repartition else SOURCE_EVENTS
        # The latency clock starts when the event was published (its Kafka timestamp), so
        # max_delay bounds publish -> job; but never before the user's last flush (which keeps
        # the rate bound of the trigger policy, also when catching up on a backlog) and never
        # after now (a producer clock running ahead).
        published = now if rec.timestamp_ms is None else rec.timestamp_ms
        seen = min(now, max(published, state.last_flush_ms))
        result = state.apply(
            event, seen_ms=seen, source=source, offset=rec.offset, limits=self.limits
        )
        if result.outcome is Applied.NEW:
            self.stats.events += 1
            self.stats.folded += result.folded
            if (
                self._items is not None
                and event.item_id is not None
                and self._items.add(event.item_id, event.weight, event.ts_ms)
            ):
                self.stats.item_interactions += 1
        elif result.outcome is Applied.DUPLICATE:
            self.stats.duplicates += 1
        else:
            self.stats.replays += 1

    async def _forward(self, rec: Record, key: bytes, raw: bytes, partition: int) -> Awaitable[Any]:
        """Re-key a record that is not in its user's partition (unkeyed, keyed by something
        else, another partitioner) so that one partition -- one worker -- owns each user. Its
        headers go with it (a control record stays one)."""
        self.stats.forwarded += 1
        origin = f"{rec.topic}:{rec.partition}:{rec.offset}".encode()
        headers = [h for h in rec.headers or () if h[0] != "forwarded_from"]
        return await self.sink.send(
            self.topics.repartition,
            key,
            raw,
            partition=partition,
            headers=[*headers, ("forwarded_from", origin)],
        )

    async def _delete_user(
        self,
        rec: Record,
        raw: bytes,
        now: int,
        touched: dict[bytes, tuple[str, UserState]],
        sends: list[Awaitable[Any]],
        deletes: list[DeleteUserJob],
    ) -> None:
        """Forget a user (streams.contracts.control): its state goes -- a tombstone on the
        changelog at this batch's write-back -- with whatever this batch applied before the
        request; a delete job follows for the embed worker. Events after it start afresh."""
        request = parse_delete_user(raw, max_user_id_chars=self.rules.max_user_id_chars)
        key = request.user_id.encode()
        partition = partition_for(key, self.partitions)
        if partition != rec.partition:
            sends.append(await self._forward(rec, key, raw, partition))
            return
        touched.pop(key, None)
        self._hot.pop(key, None)
        self._scheduled.pop(key, None)  # its heap entry is skipped as superseded
        self.store.delete(key)
        self.stats.deletes += 1
        deletes.append(DeleteUserJob(request.user_id, request.requested_at_ms, now))

    async def _dead_letter(
        self, rec: Record, raw: bytes, exc: InvalidEvent, now: int
    ) -> Awaitable[Any]:
        self.stats.dlq[exc.reason] += 1
        key, value, headers = dlq_record(rec, raw, reason=exc.reason, detail=exc.detail, now_ms=now)
        return await self.sink.send(self.topics.dlq, key, value, headers=headers)

    async def _emit(
        self,
        due: list[_Due],
        now: int,
        *,
        timer_since: int | None = None,
        deletes: Sequence[DeleteUserJob] = (),
    ) -> None:
        """Steps 2-4 of the module docstring for the due users (lock held). ``timer_since``: the
        timer's flush (only those revocation can overtake), with the time of its previous tick.
        ``deletes``: the batch's delete jobs, sent after the same barrier (their tombstones are
        durable first, as any job's state) and ahead of the update jobs: a user's update jobs
        after its delete job are its new profile."""
        check_active = timer_since is not None
        planned: list[int] = []
        if timer_since is not None:
            # How late the timer's age flushes land (streams.stream.triggers.FlushLead), counted
            # from
            # their planned moment -- or from the previous tick, for users that were due before
            # it (they arrived late, a backlog: the lead cannot help those).
            lead = self.lead.get()
            for d in due:
                at = self.policy.next_check_ms(d.state.view(), lead)
                if d.reason is FlushReason.AGE and at is not None:
                    planned.append(max(at, timer_since))
        await self.sink.barrier()
        jobs = [d.state.build_job(d.user_id, now_ms=now, limits=self.limits) for d in due]
        deliveries = [
            await self.sink.send(self.topics.updates, job.user_id.encode(), job.to_json())
            for job in deletes
        ]
        deliveries += [
            await self.sink.send(self.topics.updates, d.key, job.to_json())
            for d, job in zip(due, jobs, strict=True)
        ]
        await asyncio.gather(*deliveries)
        if planned:
            self.lead.update(self._now_ms() - min(planned))
        for d, job in zip(due, jobs, strict=True):
            self.stats.jobs += 1
            self.stats.job_events += len(job.events)
            self.stats.flushes[d.reason] += 1
            if check_active and partition_for(d.key, self.partitions) not in self.active:
                continue  # revoked meanwhile: the new owner re-emits, same numbers
            d.state.mark_flushed(job.seq, now_ms=now)
            # Lazy: if this write is lost, a restart re-emits these events with the same
            # numbers (harmless); usually the user's next batch carries it to the changelog.
            self._save(d.key, d.state, lazy=True)

    # -- the timer's side ---------------------------------------------------------------------

    def _schedule(self, key: bytes, state: UserState) -> None:
        due = self.policy.next_check_ms(state.view(), self.lead.get())
        if due is None:
            return
        current = self._scheduled.get(key)
        if current is None or due < current:
            self._scheduled[key] = due
            heapq.heappush(self._heap, (due, key))

    async def flush_due(self) -> int:
        """Flush every owned user whose trigger fires now (the timer); return how many."""
        tick = self._now_ms()
        previous, self._last_tick_ms = self._last_tick_ms or tick, tick
        if not self._heap or self._heap[0][0] > tick:
            return 0
        async with self.lock:
            now = self._now_ms()
            due: list[_Due] = []
            while self._heap and self._heap[0][0] <= now:
                when, key = heapq.heappop(self._heap)
                if self._scheduled.get(key) != when:
                    continue  # superseded by an earlier schedule, already handled
                del self._scheduled[key]
                if partition_for(key, self.partitions) not in self.active:
                    continue
                state = self._hot.get(key)
                if state is None:
                    continue  # nothing pending (flushed since it was scheduled)
                reason = self.policy.decide(state.view(), now, self.lead.get())
                if reason is None:
                    self._schedule(key, state)
                else:
                    due.append(_Due(key, key.decode(), state, reason))
            if due:
                await self._emit(due, now, timer_since=previous)
            return len(due)

    # -- idle users -----------------------------------------------------------------------------

    async def compact_idle(self, idle_ms: int, limit: int) -> int:
        """Scan the next ``limit`` stored states of the owned partitions (a sweep in chunks, one
        partition after another) and compact those whose last flush is ``idle_ms`` old
        (:meth:`UserState.compact`); return how many. The compacted state goes out lazily: if
        the write is lost, the user is simply compacted again at the next sweep."""
        async with self.lock:
            owned = sorted(self.active)
            if not owned:
                return 0
            if self._sweep_partition not in owned:
                self._sweep_partition, self._sweep_after = owned[0], None
            partition = self._sweep_partition
            chunk = self.store.scan(partition, self._sweep_after, limit)
            if len(chunk) < limit:  # this partition done: the next one from its start
                self._sweep_partition = owned[(owned.index(partition) + 1) % len(owned)]
                self._sweep_after = None
            else:
                self._sweep_after = chunk[-1][0]
            cutoff = self._now_ms() - idle_ms
            compacted = 0
            for key, _stored in chunk:
                # The current value: the scan sees the local store, which can be behind what
                # this worker wrote (written behind the changelog, streams.stream.faust_tables).
                raw = self.store.get(key)
                if raw is None or key in self._hot or has_pending(raw):
                    continue
                state = UserState.from_bytes(raw)
                if state.last_flush_ms <= cutoff and state.compact():
                    self._save(key, state, lazy=True)
                    compacted += 1
            self.stats.compacted += compacted
            return compacted

    # -- rebalancing ----------------------------------------------------------------------------

    def on_assigned(self, partitions: Iterable[int]) -> None:
        """After recovery: own ``partitions``, and re-arm the timer for their pending users."""
        self.active = set(partitions)
        self._heap.clear()
        self._scheduled.clear()
        self._hot.clear()
        for key, raw in self.store.items(self.active):
            if has_pending(raw) and partition_for(key, self.partitions) in self.active:
                state = self._hot[key] = UserState.from_bytes(raw)
                self._schedule(key, state)

    def _forget_owned(self) -> None:
        self._hot.clear()
