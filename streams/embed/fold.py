"""Fold a batch of update jobs into users' interest vectors: the embed worker's one step.

Synchronous and free of Kafka, so it runs in a worker thread (the event loop keeps heartbeating)
and is tested directly against embedded Qdrant and the real model. Per batch it makes exactly one
``users`` retrieve, at most one ``items`` retrieve, at most one model call (for texts not in the
encoder's cache) and one ``users`` upsert — whatever the number of jobs and users.

Idempotence: the stored ``seq`` is the number ``n`` of the last event folded in. Events with
``n <= seq`` are dropped before folding, so a replayed or re-cut job changes nothing.

With the collaborative dimension on (``collab``), the point also keeps the user's engaged items
(``payload["engaged"]``, :func:`models.collab.engaged_update`), folded past ``seq`` like the rest,
from which :mod:`streams.embed.collab` rebuilds the items' collaborative vectors.

Which vector an event gets: the item's vector from ``items`` when the event names an item that is
there (item and event text share the model, so they are comparable); else the event's text
embedded; else none — the event is counted under ``no_vector`` and skipped for vectors (it still
advances ``seq``: it has been handled). The user point says so too: ``payload["skipped"]`` counts
the user's skipped events by reason (``item_not_in_catalog``: the event names an item that is not
loaded and has no text; ``no_text``: neither) and ``payload["skipped_items"]`` keeps the last
few such item ids, so ``interest-stream profile`` shows what a metric alone would hide.

Texts mostly outside the languages the model serves (non-Latin script for the English-only bundled
model) are still embedded, but counted in the report (the worker exports and warns about them).

Which tags an event's interest cluster gets (its label, :mod:`models.clusters`): the event's own
tags; else its catalog item's ``payload["tags"]`` (read in the same ``items`` retrieve); else, for
a text, the phrase of its salient words (:func:`models.clusters.salient_phrase`).

A user none of whose events has a vector (and who has none stored, e.g. a new user viewing items
not loaded yet) has no vector to write, yet its point is still written, without vectors: ``seq``,
``events_folded`` (0), ``recent_items`` and an empty state. Progress is recorded like anyone
else's, so the batch commits (no retry loop blocking the partition), a replay of those events is
a no-op (they are not counted twice under ``no_vector``), and the events are not re-read later
if their item is loaded after all — they were handled when they arrived, as for users with
vectors. Recommenders treat a point without vectors like an unknown user (popular items);
the user's next embeddable event starts its vectors from that empty state.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from models.catalog import item_tags
from models.clusters import salient_phrase
from models.collab import (
    COLLAB,
    DISTANCE,
    ENGAGED_KEY,
    CollabSpec,
    engaged_from_payload,
    engaged_to_payload,
    engaged_update,
)
from models.encoder import Encoder, outside_model_languages
from models.interests import Observation, StateError
from models.profile import InterestSpec, UserInterests
from models.store import InterestStore, StoredUser, UserWrite
from streams.contracts.jobs import DeleteUserJob, JobEvent, UpdateJob

log = logging.getLogger(__name__)

#: How many skipped item ids a user point keeps (newest last).
SKIPPED_ITEMS_CAP = 10
Vectors = dict[tuple[str | None, str | None], np.ndarray]


@dataclass
class EventSources:
    """What the batch's events can draw on: a vector per (item_id, text), tags per item."""

    vectors: Vectors = field(default_factory=dict)
    item_tags: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def observation(self, e: JobEvent) -> Observation | None:
        """``e`` ready to fold, or None when it has no vector; tags as the module says."""
        vector = self.vectors.get((e.item_id, e.text))
        if vector is None:
            return None
        tags = e.tags
        if not tags and e.item_id is not None:
            tags = self.item_tags.get(e.item_id, ())
        if not tags:
            phrase = salient_phrase(e.text)
            tags = (phrase,) if phrase else ()
        return Observation(e.ts_ms, e.weight, e.type, vector, tags)


def skip_reason(e: JobEvent) -> str:
    """Why an event got no vector, as the user point records it."""
    return "item_not_in_catalog" if e.item_id is not None and not e.text else "no_text"


@dataclass
class FoldReport:
    """What one batch did, for metrics and logs."""

    jobs: int = 0
    users: int = 0
    events_applied: int = 0
    events_replayed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    texts_needed: int = 0
    item_vectors_used: int = 0
    state_resets: int = 0
    #: Distinct texts embedded this batch that are mostly outside the model's languages
    #: (:func:`models.encoder.outside_model_languages`), and the first of them.
    texts_outside_languages: int = 0
    outside_example: str | None = None
    #: Users written without any vector (progress only): nothing of theirs could be embedded.
    users_without_vectors: int = 0
    #: Users whose point was deleted on request (a delete job, streams.contracts.jobs).
    users_deleted: int = 0
    upsert_s: float = 0.0
    #: Seconds from the oldest event of each job reaching a stream worker to its upsert.
    freshness_s: list[float] = field(default_factory=list)


def after_deletes(
    records: Sequence[UpdateJob | DeleteUserJob],
) -> tuple[list[str], list[UpdateJob]]:
    """Split a batch read from interest.updates into the users to delete and the update jobs
    still to fold. A user's records arrive in their partition's order; the jobs before its last
    delete job are dropped (the delete wipes what they would fold), those after it are its new
    profile, folded onto an empty point.

    >>> from streams.contracts.jobs import JobEvent, UpdateJob
    >>> def job(user, n):
    ...     return UpdateJob(user, (JobEvent(n, f"e{n}", "click", 1.0, 0, text="t"),), 0, 0)
    >>> gone, jobs = after_deletes([job("a", 7), job("b", 3), DeleteUserJob("a", 0, 0),
    ...                             job("a", 1)])
    >>> gone, [(j.user_id, j.seq) for j in jobs]
    (['a'], [('b', 3), ('a', 1)])
    """
    last_delete: dict[str, int] = {}
    for i, record in enumerate(records):
        if isinstance(record, DeleteUserJob):
            last_delete[record.user_id] = i
    jobs = [
        r
        for i, r in enumerate(records)
        if isinstance(r, UpdateJob) and i > last_delete.get(r.user_id, -1)
    ]
    return list(last_delete), jobs


def pending_events(jobs: Sequence[UpdateJob], stored_seq: int) -> list[JobEvent]:
    """One user's events from ``jobs`` that are not folded in yet, in ``n`` order, each once.

    >>> from streams.contracts.jobs import JobEvent, UpdateJob
    >>> def job(*ns):
    ...     events = tuple(JobEvent(n, f"e{n}", "click", 1.0, 0, text="t") for n in ns)
    ...     return UpdateJob("u", events, first_seen_ms=0, emitted_ms=0)
    >>> [e.n for e in pending_events([job(3, 4), job(1, 2, 3), job(5)], stored_seq=1)]
    [2, 3, 4, 5]
    """
    by_n: dict[int, JobEvent] = {}
    for job in jobs:
        for event in job.events:
            if event.n > stored_seq:
                by_n.setdefault(event.n, event)
    return [by_n[n] for n in sorted(by_n)]


class JobFolder:
    """Applies batches of :class:`UpdateJob` to the ``users`` collection."""

    def __init__(
        self,
        store: InterestStore,
        encoder: Encoder,
        spec: InterestSpec,
        recent_items_cap: int = 200,
        collab: CollabSpec | None = None,
    ) -> None:
        """``collab``: keep each user's engaged items (``payload["engaged"]``, the statistics of
        the collaborative dimension, :mod:`models.collab`) and give items a ``collab`` vector;
        ``None``: neither."""
        self.store = store
        self.encoder = encoder
        self.spec = spec
        self.recent_items_cap = recent_items_cap
        self.collab = collab
        self._collections_ready = False

    def ensure_collections(self) -> None:
        """Create ``users``/``items`` if missing; done on first use so an unreachable Qdrant
        at start-up is retried like any other store failure instead of killing the worker."""
        if not self._collections_ready:
            extra = {COLLAB: (self.collab.rank, DISTANCE)} if self.collab is not None else None
            self.store.ensure_collections(self.encoder.dimension, self.spec.vector_names(), extra)
            self._collections_ready = True

    def apply(
        self,
        jobs: Sequence[UpdateJob],
        now_ms: int | None = None,
        forget: Sequence[str] = (),
    ) -> FoldReport:
        """Fold ``jobs`` into their users' points: one read, one write, whatever the batch.

        ``forget``: users whose points are deleted first (:func:`after_deletes`), so that their
        ``jobs`` here start new points. Deleting again is harmless, so a retried or replayed
        batch ends the same. ``now_ms`` (default: the wall clock once the vectors are ready)
        becomes each written point's ``updated_at``.
        """
        self.ensure_collections()
        report = FoldReport(jobs=len(jobs))
        if forget:
            self.store.delete_users(forget)
            report.users_deleted = len(forget)
        by_user: dict[str, list[UpdateJob]] = defaultdict(list)
        for job in jobs:
            by_user[job.user_id].append(job)
        stored = self.store.get_users(by_user)
        todo = self._pending(by_user, stored, report)
        if not todo:
            return report

        sources = self._sources([e for events in todo.values() for e in events], report)
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        writes = [
            self._fold_user(user_id, events, sources, stored, now_ms, report)
            for user_id, events in todo.items()
        ]
        started = time.perf_counter()
        self.store.upsert_users(writes)
        report.upsert_s = time.perf_counter() - started
        report.users = len(writes)

        done_ms = int(time.time() * 1000)
        report.freshness_s = [
            max(0.0, (done_ms - job.first_seen_ms) / 1000)
            for user_id, user_jobs in by_user.items()
            if user_id in todo
            for job in user_jobs
        ]
        return report

    @staticmethod
    def _pending(
        by_user: Mapping[str, Sequence[UpdateJob]],
        stored: Mapping[str, StoredUser],
        report: FoldReport,
    ) -> dict[str, list[JobEvent]]:
        """Each user's events not folded in yet (past the stored ``seq``), users with none left
        out; the events dropped as already folded are counted as replayed."""
        todo: dict[str, list[JobEvent]] = {}
        for user_id, user_jobs in by_user.items():
            seq = int(stored[user_id].payload.get("seq", 0)) if user_id in stored else 0
            events = pending_events(user_jobs, seq)
            report.events_replayed += sum(len(j.events) for j in user_jobs) - len(events)
            if events:
                todo[user_id] = events
        return todo

    def _fold_user(
        self,
        user_id: str,
        events: Sequence[JobEvent],
        sources: EventSources,
        stored: Mapping[str, StoredUser],
        now_ms: int,
        report: FoldReport,
    ) -> UserWrite:
        """One user's point to write: its interests with ``events`` folded in (those without a
        vector skipped) and the payload recording the progress, even when no vector is left."""
        interests = self._load(user_id, stored, report)
        observations = []
        skipped: list[JobEvent] = []
        for e in events:
            obs = sources.observation(e)
            if obs is None:
                report.skipped["no_vector"] += 1
                skipped.append(e)
            else:
                observations.append(obs)
        interests.update(observations)
        report.events_applied += len(observations)
        named, fragment = interests.to_stored()
        if not named:
            report.users_without_vectors += 1
            log.debug(
                "user %s: no vector for any of its %d events (item not loaded, no text); "
                "progress recorded without vectors",
                user_id,
                len(events),
            )
        previous = stored[user_id].payload if user_id in stored else {}
        payload = {
            **fragment,
            "user_id": user_id,
            "seq": events[-1].n,
            "updated_at": now_ms,
            "events_folded": int(previous.get("events_folded", 0)) + len(observations),
            "recent_items": recent_items(
                previous.get("recent_items", ()), events, self.recent_items_cap
            ),
            **skipped_update(previous, skipped),
        }
        if self.collab is not None:
            engaged = engaged_update(
                engaged_from_payload(previous),
                [(e.item_id, e.ts_ms, e.weight) for e in events],
                self.collab.user_items,
            )
            payload[ENGAGED_KEY] = engaged_to_payload(engaged)
        return user_id, named, payload

    def _sources(self, events: Sequence[JobEvent], report: FoldReport) -> EventSources:
        """Vector per (item_id, text): items first (one retrieve, their tags with them), then
        texts (one model call)."""
        item_ids = {e.item_id for e in events if e.item_id is not None}
        items, raw_tags = self.store.get_item_vectors_and_tags(item_ids) if item_ids else ({}, {})
        sources = EventSources(item_tags={i: item_tags(t) for i, t in raw_tags.items()})
        out = sources.vectors
        need_text: dict[str, list[tuple[str | None, str | None]]] = defaultdict(list)
        for e in events:
            key = (e.item_id, e.text)
            if key in out:
                continue
            if e.item_id is not None and e.item_id in items:
                out[key] = items[e.item_id]
                report.item_vectors_used += 1
            elif e.text:
                need_text[e.text].append(key)
        if need_text:
            texts = list(need_text)
            report.texts_needed += len(texts)
            outside = [t for t in texts if outside_model_languages(self.encoder.model_name, t)]
            report.texts_outside_languages += len(outside)
            report.outside_example = report.outside_example or next(iter(outside), None)
            embedded = self.encoder.encode(texts)
            for text, vector in zip(texts, embedded, strict=True):
                for key in need_text[text]:
                    out[key] = vector
        return sources

    def _load(
        self, user_id: str, stored: Mapping[str, StoredUser], report: FoldReport
    ) -> UserInterests:
        if user_id not in stored:
            return UserInterests(self.spec)
        try:
            return UserInterests.from_stored(
                stored[user_id].vectors, stored[user_id].payload, self.spec
            )
        except StateError as exc:
            # A damaged point must not block the user forever: start over and say so loudly.
            log.error(
                "user %s: stored state unusable (%s); rebuilding from new events", user_id, exc
            )
            report.state_resets += 1
            return UserInterests(self.spec)


def recent_items(previous: Iterable[str], events: Sequence[JobEvent], cap: int) -> list[str]:
    """The user's most recent distinct item ids, newest last (recommend excludes them).

    >>> from streams.contracts.jobs import JobEvent
    >>> evs = [JobEvent(n, f"e{n}", "view", 0.5, 0, item_id=i) for n, i in enumerate("bcb", 1)]
    >>> recent_items(["a", "b"], evs, cap=3)
    ['a', 'c', 'b']
    """
    order = [*previous, *(e.item_id for e in events if e.item_id is not None)]
    newest_last = list(dict.fromkeys(reversed(order)))[:cap]
    return newest_last[::-1]


def skipped_update(previous: Mapping[str, Any], skipped: Sequence[JobEvent]) -> dict[str, Any]:
    """The point's ``skipped`` (count per reason) and ``skipped_items`` (last item ids not in the
    catalog, newest last) with ``skipped`` events added; ``{}`` when there never were any.

    >>> from streams.contracts.jobs import JobEvent
    >>> ev = JobEvent(3, "e3", "view", 0.5, 0, item_id="ghost")
    >>> skipped_update({"skipped": {"item_not_in_catalog": 1}, "skipped_items": ["g0"]}, [ev])
    {'skipped': {'item_not_in_catalog': 2}, 'skipped_items': ['g0', 'ghost']}
    """
    stored = previous.get("skipped")
    counts: Counter[str] = Counter(
        {k: v for k, v in stored.items() if isinstance(v, int)} if isinstance(stored, dict) else {}
    )
    if not skipped and not counts:
        return {}
    counts.update(skip_reason(e) for e in skipped)
    kept = previous.get("skipped_items")
    ids = [*(kept if isinstance(kept, list) else ()), *(e.item_id for e in skipped if e.item_id)]
    newest_last = list(dict.fromkeys(reversed(ids)))[:SKIPPED_ITEMS_CAP][::-1]
    return {"skipped": dict(counts), "skipped_items": newest_last}
