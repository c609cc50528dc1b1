"""Fast mode: the models/ code directly, no Kafka — items and users straight into embedded Qdrant.

:func:`fast_world` loads the items (popularity counted on the given splits' profile parts only),
folds every user's profile through the embed worker's :class:`~streams.embed.fold.JobFolder` and
opens the result for scoring. :func:`open_world` does the last step for a Qdrant folder someone
else filled (the pipeline's workers).
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.eval.engine import ItemIndex
from bench.eval.methods import World
from bench.eval.world import fold_users, load_items, open_folder, open_store, read_users
from bench.movielens import MovieLens, UserSplit, popularity
from models.collab import CollabSpec
from models.profile import InterestSpec
from models.recommend import Recommender
from models.settings import RecommendSettings
from models.store import InterestStore
from streams.embed.collab import CollabRefresher


@contextlib.contextmanager
def fast_world(
    data: MovieLens,
    splits: Sequence[UserSplit],
    spec: InterestSpec,
    vectors: npt.NDArray[np.float32],
    path: Path | None = None,
    *,
    settings: RecommendSettings | None = None,
    memo: bool = False,
    collab: CollabSpec | None = None,
) -> Iterator[World]:
    """A fresh embedded Qdrant (a temp dir unless ``path``) with items and folded users, scored
    by a Recommender with ``settings``; ``memo`` keeps prefetch results for re-scoring with
    other weights (tuning). With ``collab`` the fold keeps the users' engagement lists and the
    items' collaborative vectors are rebuilt from them afterwards (the embed worker's
    :class:`~streams.embed.collab.CollabRefresher`, as when it stops)."""
    with contextlib.ExitStack() as stack:
        if path is None:
            path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="ml-eval-")))
        store = open_store(path, int(vectors.shape[1]), spec, collab)
        try:
            counts = popularity(splits)
            load_items(store, data, vectors, counts)
            report = fold_users(store, data, splits, spec, collab=collab)
            if collab is not None:
                CollabRefresher(store, collab).refresh()
        finally:
            store.close()
        if report.skipped:
            raise RuntimeError(f"events skipped while folding: {dict(report.skipped)}")
        # Closed (flushed) and reopened, as the pipeline's store is after its workers stop:
        # both modes then score from the same kind of store.
        dim = int(vectors.shape[1])
        yield stack.enter_context(open_world(path, data, splits, dim, settings=settings, memo=memo))


@contextlib.contextmanager
def open_world(
    path: Path,
    data: MovieLens,
    splits: Sequence[UserSplit],
    dimension: int,
    *,
    settings: RecommendSettings | None = None,
    memo: bool = False,
) -> Iterator[World]:
    """Score from a filled Qdrant folder (the pipeline's, or fast mode's after the fold)."""
    store = open_folder(path, dimension)
    try:
        counts = popularity(splits)
        yield _world(store, data, splits, list(data.movies), counts, settings, memo=memo)
    finally:
        store.close()


def _world(
    store: InterestStore,
    data: MovieLens,
    splits: Sequence[UserSplit],
    item_ids: Sequence[str],
    counts: Mapping[str, int],
    settings: RecommendSettings | None,
    *,
    memo: bool = False,
) -> World:
    index = ItemIndex.from_store(store, item_ids)
    users = read_users(store, [s.user_id for s in splits])
    return World(
        data=data,
        splits=list(splits),
        index=index,
        users=users,
        recommender=Recommender(store, settings=settings),
        popularity=counts,
        memo=memo,
    )
