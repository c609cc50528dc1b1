"""Rebuild the items' collaborative vectors from the users' engagement lists: the embed worker's
periodic step (and the offline evaluation's, after its fold).

Synchronous and free of Kafka, like :mod:`streams.embed.fold`; the math is
:mod:`models.collab`. One rebuild reads every user point's ``payload["engaged"]`` twice (count,
then accumulate the co-engagement matrix of at most ``max_items`` items), derives the item
vectors, and reads the items collection twice: first the items with co-engagement (their vectors
are written, and fit the content → collaborative map), then the others (their vectors are
predicted from their content vector and written). Every item present gets a vector, so what a
rebuild writes depends only on the stored user lists and items, never on earlier rebuilds: the
worker, which rebuilds now and then while it folds, ends with what one rebuild over the final
state gives — the offline computation.

Why rebuild rather than update item vectors event by event: the statistics that matter (who
engaged with what, decayed) are already kept incrementally, replay-safe and bounded in the user
points; a rebuild from them is exact, needs no state of its own in any worker (so several
workers, restarts and rebalances are nothing special), and the eigen-decomposition that turns
co-engagement into vectors is a whole-matrix step anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from models.collab import (
    COLLAB,
    ENGAGED_KEY,
    CoEngagement,
    ColdMap,
    CollabSpec,
    Entry,
    FloatArray,
    engaged_from_payload,
    item_embedding,
)
from models.store import ITEM_VECTOR, InterestStore, named_vectors

log = logging.getLogger(__name__)

BATCH = 512


@dataclass
class RefreshReport:
    """What one rebuild did."""

    users: int = 0
    items_learned: int = 0  # vectors from co-engagement
    items_predicted: int = 0  # vectors predicted from content
    vocabulary: int = 0  # items in the co-engagement matrix (some may not be loaded)
    seconds: float = 0.0


class CollabRefresher:
    """Rebuilds the ``collab`` vectors of every item in one store (see the module doc)."""

    def __init__(self, store: InterestStore, spec: CollabSpec) -> None:
        self.store = store
        self.spec = spec

    def refresh(self) -> RefreshReport:
        """One rebuild; a store without the ``collab`` item vector, or without any engagement,
        is left as it is."""
        started = time.monotonic()
        report = RefreshReport()
        if COLLAB not in self.store.item_vector_names():
            return report
        co = self._co_engagement(report)
        if not co.items:
            return report
        vectors = item_embedding(co.gram, self.spec.rank, self.spec.shrinkage)
        learned = {item: vectors[row] for row, item in enumerate(co.items)}
        cold = self._write_learned(learned, report)
        if cold.fitted:
            self._write_predicted(learned, co.seen, cold, report)
        report.seconds = time.monotonic() - started
        log.info(
            "collaborative vectors rebuilt from %d users: %d items learned, %d predicted from "
            "text (%d in the co-engagement matrix) in %.1f s",
            report.users, report.items_learned, report.items_predicted, report.vocabulary,
            report.seconds,
        )  # fmt: skip
        return report

    def _co_engagement(self, report: RefreshReport) -> CoEngagement:
        """Both passes over the users (one page of lists in memory at a time)."""
        co = CoEngagement(self.spec)
        for page in self._pages():
            for entries in page:
                co.count(entries)
                report.users += 1
        co.freeze()
        for page in self._pages():
            for entries in page:
                co.add(entries)
        report.vocabulary = len(co.items or ())
        return co

    def _pages(self) -> Iterator[list[list[Entry]]]:
        """Pages of the users' engagement lists, in point-id order."""
        for page in self.store.scroll_all(
            self.store.users_collection, with_payload=[ENGAGED_KEY], batch=BATCH
        ):
            yield [engaged_from_payload(r.payload or {}) for r in page]

    def _item_pages(self) -> Iterator[list[tuple[str, FloatArray]]]:
        """Pages of ``(item_id, content vector)`` of every item, in point-id order."""
        for page in self.store.scroll_all(
            self.store.items_collection, with_payload=["item_id"], with_vectors=[ITEM_VECTOR],
            batch=BATCH,
        ):  # fmt: skip
            rows = []
            for r in page:
                item_id = (r.payload or {}).get("item_id")
                vector = named_vectors(r.vector).get(ITEM_VECTOR)
                if isinstance(item_id, str) and vector is not None:
                    rows.append((item_id, vector.astype(np.float64)))
            yield rows

    def _write_learned(self, learned: dict[str, FloatArray], report: RefreshReport) -> ColdMap:
        """Items with co-engagement get their vectors; they also fit the content map."""
        cold = ColdMap(self.spec.cold_ridge)
        for rows in self._item_pages():
            known = [(i, v) for i, v in rows if i in learned]
            if not known:
                continue
            targets = np.stack([learned[i] for i, _ in known])
            cold.add(np.stack([v for _, v in known]), targets)
            self.store.set_item_vectors(COLLAB, {i: learned[i] for i, _ in known})
            report.items_learned += len(known)
        return cold

    def _write_predicted(
        self,
        learned: dict[str, FloatArray],
        seen: set[str],
        cold: ColdMap,
        report: RefreshReport,
    ) -> None:
        """Items without co-engagement get a vector predicted from their content vector,
        × ``cold_scale`` for the new ones (no event at all, :mod:`models.collab`)."""
        for rows in self._item_pages():
            unknown = [(i, v) for i, v in rows if i not in learned]
            if not unknown:
                continue
            scale = np.array([1.0 if i in seen else self.spec.cold_scale for i, _ in unknown])
            predicted = cold.predict(np.stack([v for _, v in unknown])) * scale[:, None]
            self.store.set_item_vectors(
                COLLAB, {i: predicted[k] for k, (i, _) in enumerate(unknown)}
            )
            report.items_predicted += len(unknown)
