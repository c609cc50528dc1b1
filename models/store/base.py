"""What every store backend shares: point ids, errors, the collection layout and the backend
interface.

The store speaks Qdrant's own REST data model (``qdrant_client.http.models``: ``PointStruct``,
``Record``, ``ScoredPoint``, ``QueryRequest``, ``Filter``) whatever runs underneath, so a request
is written once (:mod:`models.query_plan`) and each backend translates it for its engine:

- :class:`~models.store.edge.EdgeBackend`: Qdrant's engine in this process (``qdrant-edge-py``),
  one shard per collection in a folder — the default;
- :class:`~models.store.client.ClientBackend`: a Qdrant server or cluster through qdrant-client
  (and, in tests only, qdrant-client's pure-Python local mode as a reference).

Point ids are ``uuid5(POINT_NAMESPACE, id)`` for users and items alike, so any client in any
language can address a user or an item without a lookup. ``POINT_NAMESPACE`` is
``uuid5(NAMESPACE_URL, "interest-stream")`` and must never change: it is baked into stored ids.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import numpy as np
import numpy.typing as npt
from qdrant_client.http import models as qm

from models.settings import PayloadIndexKind, VectorStorage

POINT_NAMESPACE: Final = uuid.uuid5(uuid.NAMESPACE_URL, "interest-stream")
"""Namespace of every point id, = 5c239107-505c-55b4-8c38-7a33e6d410c4; fixed forever."""

Float32Array = npt.NDArray[np.float32]

ITEM_VECTOR: Final = "content"
"""The one named vector of an item point."""
#: Item payload field with a non-negative popularity (prior and cold-start fallback).
POPULARITY_FIELD: Final = "popularity"
#: Item payload fields the workers maintain, not the catalog: ``upsert_items`` keeps their
#: stored values when it re-writes an existing item.
LIVE_ITEM_FIELDS: Final = (POPULARITY_FIELD,)
#: Item vectors the workers derive (the collaborative vector, :mod:`models.collab`): kept too.
LIVE_ITEM_VECTORS: Final = ("collab",)


class StoreError(RuntimeError):
    """Base class for store errors the CLI turns into a one-line reason."""


class StoreLockedError(StoreError):
    """The embedded store's folder is held by another process."""


class StoreSchemaError(StoreError):
    """An existing collection does not match the model (dimension) or the configured vectors."""


class CollectionNotFound(StoreError):
    """The collection a read asked for does not exist (yet)."""


class LegacyStoreError(StoreError):
    """The embedded folder holds an earlier version's store (qdrant-client local mode)."""


class EngineError(StoreError):
    """The engine refused or failed a request; the message is its own, first line."""


class StoreUnavailableError(EngineError):
    """The store could not be reached (a server down or refusing connections, TLS that fails,
    an injected outage); retrying later may work."""


class UnsupportedRequest(StoreError, ValueError):
    """A query the embedded engine cannot answer (a feature of a Qdrant server only)."""


def user_point_id(user_id: str) -> str:
    """Qdrant point id of a user: ``uuid5(POINT_NAMESPACE, user_id)`` as a string."""
    return str(uuid.uuid5(POINT_NAMESPACE, user_id))


def item_point_id(item_id: str) -> str:
    """Qdrant point id of an item: ``uuid5(POINT_NAMESPACE, item_id)`` as a string."""
    return str(uuid.uuid5(POINT_NAMESPACE, item_id))


@dataclass(frozen=True, slots=True)
class StoredUser:
    """A user point as read back: the named vectors it has (float32, unit) and its payload."""

    vectors: dict[str, Float32Array] = field(default_factory=dict)
    payload: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CollectionLayout:
    """How one collection is stored: its cosine named vectors and how they are sized.

    ``searched=False`` (users: read by id only) builds no nearest-neighbour index at all (HNSW
    ``m=0``); ``searched=True`` (items) builds HNSW with ``hnsw_m``/``hnsw_ef_construct``.
    ``payload_indexes`` are created with the collection (a float index on ``popularity`` lets the
    popular-items fallback order by it; keyword indexes make filters cheap).
    """

    vector_names: tuple[str, ...]
    dimension: int
    storage: VectorStorage = "ram"
    searched: bool = False
    hnsw_m: int = 16
    hnsw_ef_construct: int = 100
    payload_on_disk: bool = True
    payload_indexes: Mapping[str, PayloadIndexKind] = field(default_factory=dict)
    extra_vectors: Mapping[str, tuple[int, str]] = field(default_factory=dict)
    """Named vectors with a size and distance of their own, ``{name: (size, "Dot")}`` (the
    items' collaborative vector): stored like the others, searched with their own distance."""

    def bytes_per_point(self) -> dict[str, int]:
        """Estimated bytes per point by component, for sizing (payload not included).

        ``ram`` counts vectors in memory; ``disk`` counts what is on disk (the OS caches the
        pages in use); the HNSW graph is about ``2·m`` links of 4 bytes at level 0.

        >>> CollectionLayout(("content",), 384, "int8", searched=True).bytes_per_point()
        {'vectors_ram': 384, 'vectors_disk': 1536, 'index_ram': 128}
        >>> CollectionLayout(("a", "b"), 384, "disk").bytes_per_point()
        {'vectors_ram': 0, 'vectors_disk': 3072, 'index_ram': 0}
        """
        floats = self.dimension * len(self.vector_names)
        floats += sum(size for size, _ in self.extra_vectors.values())
        raw = 4 * floats
        ram = {"ram": raw, "disk": 0, "int8": floats}
        disk = {"ram": 0, "disk": raw, "int8": raw}
        count = len(self.vector_names) + len(self.extra_vectors)
        index = 2 * self.hnsw_m * 4 * count if self.searched else 0
        return {
            "vectors_ram": ram[self.storage],
            "vectors_disk": disk[self.storage],
            "index_ram": index,
        }


PointIds = Sequence[str]
WithPayload = bool | Sequence[str]
WithVectors = bool | Sequence[str]


class StoreBackend(Protocol):
    """The Qdrant operations the store needs, on one engine.

    Ids are point-id strings; records come back as qdrant-client's ``Record``/``ScoredPoint``
    with string ids, the vectors of a point as a ``{name: list[float]}`` mapping. A read of a
    collection that does not exist raises :class:`CollectionNotFound`.
    """

    kind: str
    """``embedded``, ``server`` or ``local`` (qdrant-client's local mode: tests only)."""

    def collection_exists(self, collection: str) -> bool: ...

    def create_collection(self, collection: str, layout: CollectionLayout) -> None: ...

    def vector_params(self, collection: str) -> dict[str, tuple[int, str]]:
        """``{vector name: (size, distance)}`` of an existing collection (distance as Qdrant
        spells it: ``Cosine``, ``Dot`` ...)."""
        ...

    def retrieve(
        self,
        collection: str,
        ids: PointIds,
        *,
        with_payload: WithPayload,
        with_vectors: WithVectors,
    ) -> list[qm.Record]: ...

    def upsert(self, collection: str, points: Sequence[qm.PointStruct]) -> None:
        """Write whole points and return once they are durable (WAL / ``wait=True``)."""
        ...

    def set_payload(self, collection: str, payload: Mapping[str, Any], ids: PointIds) -> None:
        """Set these payload fields (others stay) on existing points."""
        ...

    def set_payloads(self, collection: str, payloads: Mapping[str, Mapping[str, Any]]) -> None:
        """Set different fields on each point (``{point id: fields}``), one request if possible."""
        ...

    def delete(self, collection: str, ids: PointIds) -> None: ...

    def update_vectors(
        self, collection: str, vectors: Mapping[str, Mapping[str, list[float]]]
    ) -> None:
        """Replace some named vectors of existing points (``{point id: {name: vector}}``); the
        point's other vectors and its payload stay."""
        ...

    def add_vector(self, collection: str, name: str, size: int, distance: str) -> None:
        """Add a named vector to an existing collection (points have none of it yet)."""
        ...

    def drop_vector(self, collection: str, name: str) -> None:
        """Remove a named vector from a collection, with every point's value of it."""
        ...

    def scroll(
        self,
        collection: str,
        *,
        limit: int,
        offset: str | int | None = None,
        query_filter: qm.Filter | None = None,
        with_payload: WithPayload = True,
        with_vectors: WithVectors = False,
    ) -> tuple[list[qm.Record], str | int | None]:
        """Points in id order from ``offset``, and the id to continue from (None at the end)."""
        ...

    def count(self, collection: str, query_filter: qm.Filter | None = None) -> int: ...

    def query(self, collection: str, request: qm.QueryRequest) -> list[qm.ScoredPoint]:
        """One Query API request, as the server's ``POST /collections/{c}/points/query``."""
        ...

    def info(self, collection: str) -> qm.CollectionInfo:
        """The collection as the server's ``GET /collections/{c}`` describes it."""
        ...

    def flush(self) -> None: ...

    def optimize(self, collections: Sequence[str] | None = None) -> bool:
        """Build pending indexes and compact now (embedded); a server does it on its own."""
        ...

    def close(self) -> None: ...
