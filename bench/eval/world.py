"""The evaluation's Qdrant: MovieLens items with a training-only popularity, users folded in.

Item vectors: the bundled model embeds the 1682 movies once, as ``interest-stream items load``
embeds an item (:func:`models.catalog.item_embedding_text`: ``"title (year)"``, followed by the
genres when ``item_tags_in_text`` is on); the vectors are cached on disk next to the dataset,
keyed by model name and a hash of the embedded texts, so later runs need no model at all.

Users, fast mode: each user's profile events become one :class:`~streams.contracts.jobs.UpdateJob`
(events
validated and normalised by :func:`streams.contracts.events.validate_event`, numbered 1..n as the
stream
worker numbers them) and go through :meth:`streams.embed.fold.JobFolder.apply` — the embed
worker's own step — into embedded Qdrant (Qdrant's engine in this process,
:class:`~models.store.edge.EdgeBackend`). Clusters depend on event order and the decayed means do
not depend on how events are cut into jobs, so this equals what the pipeline writes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.movielens import MovieLens, UserSplit, default_cache_dir
from models.catalog import item_embedding_text
from models.collab import COLLAB, DISTANCE, CollabSpec
from models.profile import InterestSpec
from models.settings import BUNDLED_MODEL_NAME, ModelSettings, QdrantSettings
from models.store import InterestStore, StoredUser
from models.store.edge import EdgeBackend
from streams.contracts.events import validate_event
from streams.contracts.jobs import JobEvent, UpdateJob
from streams.embed.fold import FoldReport, JobFolder

#: ``now`` for validation: far ahead of 1998, so the far-future check never trips.
VALIDATION_NOW_MS = 2**52


def item_tags_in_text_default() -> bool:
    """The library's default for ``ModelSettings.item_tags_in_text`` (never the environment)."""
    default: bool = ModelSettings.model_fields["item_tags_in_text"].get_default()
    return default


def item_texts(data: MovieLens, tags_in_text: bool) -> list[str]:
    """What the model embeds per movie, as ``interest-stream items load`` would embed it."""
    return [
        item_embedding_text(m.text, m.tags if tags_in_text else ()) for m in data.movies.values()
    ]


def item_vectors(
    data: MovieLens,
    model_name: str = BUNDLED_MODEL_NAME,
    cache_dir: Path | None = None,
    *,
    tags_in_text: bool | None = None,
) -> npt.NDArray[np.float32]:
    """One unit float32 row per movie (in ``data.movies`` order), cached on disk.

    ``tags_in_text`` (None: the library default) embeds ``"title (year). Genre, Genre"``."""
    if tags_in_text is None:
        tags_in_text = item_tags_in_text_default()
    texts = item_texts(data, tags_in_text)
    digest = hashlib.sha256("\n".join([model_name, *texts]).encode()).hexdigest()[:16]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in model_name)
    path = (cache_dir or default_cache_dir()) / f"items-{safe}-{digest}.npy"
    if path.exists():
        cached: npt.NDArray[np.float32] = np.load(path)
        if cached.shape[0] == len(texts):
            return cached
    from models.encoder import Encoder

    vectors = Encoder(model_name).encode(texts)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, vectors)
    tmp.replace(path)
    return vectors


def store_settings(path: Path) -> QdrantSettings:
    """The library's own store settings (never the environment's) with the folder ``path``.

    The collections' sizing (item storage, HNSW, payload indexes) is the library default
    whatever ``INTEREST_QDRANT_*`` says where the evaluation runs, so the numbers do not depend
    on it; the pipeline's workers only open the collections created with these settings.
    """
    values = {
        n: f.get_default(call_default_factory=True) for n, f in QdrantSettings.model_fields.items()
    }
    values.update(path=path, url=None)
    return QdrantSettings(**values)


def open_folder(path: Path, dimension: int) -> InterestStore:
    """The embedded store in ``path`` (created if missing), held by this process until closed."""
    return InterestStore(EdgeBackend(path), dimension=dimension, settings=store_settings(path))


def open_store(
    path: Path, dimension: int, spec: InterestSpec, collab: CollabSpec | None = None
) -> InterestStore:
    """Embedded Qdrant in ``path`` with the ``items`` and ``users`` collections (the items with
    a ``collab`` vector when ``collab`` is given, as the embed worker creates them)."""
    store = open_folder(path, dimension)
    extra = {COLLAB: (collab.rank, DISTANCE)} if collab is not None else None
    store.ensure_collections(dimension, spec.vector_names(), extra)
    return store


def load_items(
    store: InterestStore,
    data: MovieLens,
    vectors: npt.NDArray[np.float32],
    popularity: Mapping[str, int],
) -> list[str]:
    """Upsert every movie (text, tags, ``popularity`` = training interactions); returns the ids
    in upsert order (MovieLens id order)."""
    movies = list(data.movies.values())
    store.upsert_items(
        [
            (m.item_id, v, {"text": m.text, "tags": list(m.tags), "popularity": popularity_value(
                popularity, m.item_id)})
            for m, v in zip(movies, vectors, strict=True)
        ]
    )  # fmt: skip
    return [m.item_id for m in movies]


def popularity_value(popularity: Mapping[str, int], item_id: str) -> float:
    """The payload value: a float ≥ 0 (0.0 for items nobody touched in training)."""
    return float(popularity.get(item_id, 0))


def user_job(data: MovieLens, split: UserSplit) -> UpdateJob:
    """The user's profile events as one update job, numbered like the stream worker does."""
    events = []
    for n, rating in enumerate(split.profile, start=1):
        e = validate_event(data.event(rating), now_ms=VALIDATION_NOW_MS)
        events.append(JobEvent(n, e.event_id, e.type, e.weight, e.ts_ms, e.item_id, e.text, e.tags))
    return UpdateJob(split.user_id, tuple(events), first_seen_ms=0, emitted_ms=0)


class _ItemsOnly:
    """Stands in for the encoder: every event names a stored item, so no text is embedded
    (a call here would mean an item is missing from the store — a harness bug)."""

    def __init__(self, dimension: int) -> None:
        self.dimension = dimension

    def encode(self, texts: Sequence[str]) -> Any:
        raise RuntimeError(f"{len(texts)} events name items missing from the store")


def fold_users(
    store: InterestStore,
    data: MovieLens,
    splits: Iterable[UserSplit],
    spec: InterestSpec,
    *,
    batch_users: int = 128,
    collab: CollabSpec | None = None,
) -> FoldReport:
    """Every split's profile through ``JobFolder.apply``, ``batch_users`` users per step (with
    the users' engagement lists when ``collab`` is given, as the embed worker folds them)."""
    assert store.dimension is not None
    encoder = _ItemsOnly(store.dimension)
    folder = JobFolder(store, encoder, spec, collab=collab)  # type: ignore[arg-type]
    total = FoldReport()
    jobs = [user_job(data, s) for s in splits]
    for start in range(0, len(jobs), batch_users):
        report = folder.apply(jobs[start : start + batch_users], now_ms=0)
        total.jobs += report.jobs
        total.users += report.users
        total.events_applied += report.events_applied
        total.skipped.update(report.skipped)
    return total


def read_users(store: InterestStore, user_ids: Sequence[str]) -> dict[str, StoredUser | None]:
    """Stored user points (``None`` for users never written), in chunks of 256."""
    out: dict[str, StoredUser | None] = {}
    for start in range(0, len(user_ids), 256):
        chunk = user_ids[start : start + 256]
        found = store.get_users(chunk)
        out.update({u: found.get(u) for u in chunk})
    return out
