"""User and item vectors in Qdrant: embedded (local mode) by default, a server when a URL is set.

Collections (names from ``QdrantSettings``):

- ``items``: one point per item, vector ``content`` (cosine), payload = the item's payload plus
  ``item_id``. ``popularity`` is a live field: the embed workers set it from the stream workers'
  counts, and re-writing an item (``items load`` again) keeps the stored value (see
  ``upsert_items``).
- ``users``: one point per user, a named cosine vector per dimension (``short_term``,
  ``long_term``, ``search``, ``negative``, ``interest_0`` ...; the caller passes the names); a point
  may lack some of them. Payload: ``user_id``, ``seq``, ``updated_at``, per-dimension state,
  profile — all supplied by the caller.

Point ids are ``uuid5(POINT_NAMESPACE, id)`` for users and items alike, so any client in any
language can address a user or an item without a lookup. ``POINT_NAMESPACE`` is
``uuid5(NAMESPACE_URL, "interest-stream")`` and must never change: it is baked into stored ids.

Qdrant normalises cosine vectors on write, so what comes back is the unit vector; whatever is
needed to continue a weighted mean exactly lives in the payload (the caller's business).

``upsert_users`` replaces whole points: vectors not passed are gone afterwards. The caller always
passes the full set of vectors the user has (it read them with ``get_users`` first). A user point
may have no vectors at all: a user whose events could not be embedded yet still gets a point that
records its progress (``seq``), so replays of those events stay no-ops.

Embedded Qdrant locks its folder to one process (portalocker, exclusive and non-blocking, on
``<path>/.lock``); opening a held folder raises ``StoreLockedError``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from qdrant_client import QdrantClient
from qdrant_client.http import models as qm

from models.settings import QdrantSettings

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

# The message qdrant-client's local mode raises (as a bare RuntimeError) when the folder is locked.
_LOCKED_MARKER = "already accessed by another instance"


class StoreError(RuntimeError):
    """Base class for store errors the CLI turns into a one-line reason."""


class StoreLockedError(StoreError):
    """The embedded store's folder is held by another process."""


class StoreSchemaError(StoreError):
    """An existing collection does not match the model (dimension) or the configured vectors."""


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


VectorLike = npt.NDArray[Any] | Sequence[float]
"""Anything ``np.asarray`` turns into a 1-d float vector of the store's dimension."""

UserWrite = tuple[str, Mapping[str, VectorLike], Mapping[str, Any]]
"""(user_id, {vector name: vector}, payload) — one user for ``upsert_users``."""

ItemWrite = tuple[str, VectorLike, Mapping[str, Any]]
"""(item_id, vector, payload) — one item for ``upsert_items``."""


class InterestStore:
    """Reads and writes user and item points; every method is one Qdrant request."""

    def __init__(
        self,
        client: QdrantClient,
        *,
        dimension: int | None = None,
        users_collection: str = "users",
        items_collection: str = "items",
        remote: bool = False,
    ) -> None:
        self.client = client
        self.remote = remote
        self.dimension = dimension
        self.users_collection = users_collection
        self.items_collection = items_collection

    @classmethod
    def from_settings(cls, settings: QdrantSettings, dimension: int | None = None) -> InterestStore:
        """Open the store: embedded in ``settings.path`` unless ``settings.url`` is set.

        ``dimension`` (the model's) is needed to write; readers may leave it out.
        Raises ``StoreLockedError`` when the embedded folder is held by another process.
        """
        if settings.url:
            api_key = settings.api_key.get_secret_value() if settings.api_key else None
            client = QdrantClient(url=settings.url, api_key=api_key, timeout=settings.timeout)
        else:
            client = open_local_client(settings.path)
        return cls(
            client,
            dimension=dimension,
            users_collection=settings.users_collection,
            items_collection=settings.items_collection,
            remote=bool(settings.url),
        )

    # -- lifecycle -----------------------------------------------------------------------------

    def close(self) -> None:
        """Release the client (and, in embedded mode, the folder lock)."""
        self.client.close()

    def __enter__(self) -> InterestStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_collections(self, dimension: int, vector_names: Sequence[str]) -> None:
        """Create ``items`` and ``users`` if missing; check them if they exist.

        An existing collection must have every requested vector at ``dimension`` with cosine
        distance (extra vectors are tolerated, e.g. after lowering K); otherwise
        ``StoreSchemaError`` — changing the model or adding dimensions needs a new collection.
        """
        if not vector_names:
            raise ValueError("vector_names must not be empty")
        if len(set(vector_names)) != len(vector_names):
            raise ValueError(f"duplicate vector names: {list(vector_names)}")
        self.dimension = dimension
        self._ensure(self.items_collection, [ITEM_VECTOR], dimension)
        self._ensure(self.users_collection, list(vector_names), dimension)
        if self.remote:
            # A Qdrant server orders (recommend's popular fallback) only by indexed fields;
            # the embedded mode has no payload indexes and warns about them.
            self.client.create_payload_index(
                self.items_collection, POPULARITY_FIELD, field_schema=qm.PayloadSchemaType.FLOAT
            )

    def _ensure(self, name: str, vector_names: list[str], dimension: int) -> None:
        wanted = {
            v: qm.VectorParams(size=dimension, distance=qm.Distance.COSINE) for v in vector_names
        }
        if not self.client.collection_exists(name):
            self.client.create_collection(name, vectors_config=wanted)
            return
        existing = self.client.get_collection(name).config.params.vectors
        have = existing if isinstance(existing, Mapping) else {}
        problems = []
        for v in vector_names:
            params = have.get(v)
            if params is None:
                problems.append(f"no vector {v!r}")
            elif params.size != dimension or params.distance != qm.Distance.COSINE:
                problems.append(
                    f"vector {v!r} is {params.size}-d {params.distance.value}, "
                    f"want {dimension}-d Cosine"
                )
        if problems:
            raise StoreSchemaError(
                f"collection {name!r} does not match the configuration ({'; '.join(problems)}); "
                "a different model or new dimensions need a fresh collection"
            )

    # -- users ---------------------------------------------------------------------------------

    def get_users(self, user_ids: Iterable[str]) -> dict[str, StoredUser]:
        """Stored users among ``user_ids`` (one request); users never written are absent."""
        by_point = {user_point_id(u): u for u in user_ids}
        if not by_point:
            return {}
        records = self.client.retrieve(
            self.users_collection, ids=list(by_point), with_payload=True, with_vectors=True
        )
        out: dict[str, StoredUser] = {}
        for rec in records:
            user_id = by_point.get(str(rec.id))
            if user_id is None:  # cannot happen unless the server answers ids we did not ask for
                continue
            out[user_id] = StoredUser(
                vectors=_named_vectors(rec.vector), payload=dict(rec.payload or {})
            )
        return out

    def upsert_users(self, users: Sequence[UserWrite]) -> None:
        """Write users (one request, ``wait=True``): each point is replaced whole.

        ``vectors`` must be every vector the user has (missing names are dropped from the point);
        an empty mapping writes a point without vectors (progress only, e.g. a user none of whose
        events had a vector yet). ``payload`` carries ``user_id`` (filled in if absent), ``seq``,
        ``updated_at`` and the rest, as the caller builds it. A later entry for the same user wins.
        """
        points: dict[str, qm.PointStruct] = {}
        for user_id, vectors, payload in users:
            body = dict(payload)
            if body.setdefault("user_id", user_id) != user_id:
                raise ValueError(f"user {user_id!r}: payload user_id is {body['user_id']!r}")
            pid = user_point_id(user_id)
            points[pid] = qm.PointStruct(
                id=pid,
                vector={
                    name: self._vector(vec, f"user {user_id!r} vector {name!r}")
                    for name, vec in vectors.items()
                },
                payload=body,
            )
        if points:
            self.client.upsert(self.users_collection, points=list(points.values()), wait=True)

    # -- items ---------------------------------------------------------------------------------

    def get_item_vectors(self, item_ids: Iterable[str]) -> dict[str, Float32Array]:
        """Content vectors (float32, unit) of those of ``item_ids`` that exist; one request."""
        by_point = {item_point_id(i): i for i in item_ids}
        if not by_point:
            return {}
        records = self.client.retrieve(
            self.items_collection, ids=list(by_point), with_payload=False, with_vectors=True
        )
        out: dict[str, Float32Array] = {}
        for rec in records:
            item_id = by_point.get(str(rec.id))
            vector = _named_vectors(rec.vector).get(ITEM_VECTOR)
            if item_id is not None and vector is not None:
                out[item_id] = vector
        return out

    def upsert_items(self, items: Sequence[ItemWrite]) -> None:
        """Write items (two requests: one retrieve, one upsert with ``wait=True``).

        Each item's vector and payload are replaced by the ones given (payload gets
        ``item_id``), except the live fields (``LIVE_ITEM_FIELDS``: ``popularity``): an item
        that already has one keeps its stored value, so re-loading the catalog does not reset
        what the workers measured; a value in ``payload`` only seeds an item that has none.
        Later entries for the same item win.

        Against a Qdrant server, a popularity value another process sets between the two
        requests is overwritten by the one read just before (the next popularity update
        corrects it); in embedded mode one process, one store thread, does both.
        """
        points: dict[str, qm.PointStruct] = {}
        for item_id, vector, payload in items:
            body = dict(payload)
            if body.setdefault("item_id", item_id) != item_id:
                raise ValueError(f"item {item_id!r}: payload item_id is {body['item_id']!r}")
            pid = item_point_id(item_id)
            points[pid] = qm.PointStruct(
                id=pid,
                vector={ITEM_VECTOR: self._vector(vector, f"item {item_id!r}")},
                payload=body,
            )
        if not points:
            return
        stored = self.client.retrieve(
            self.items_collection,
            ids=list(points),
            with_payload=list(LIVE_ITEM_FIELDS),
            with_vectors=False,
        )
        for rec in stored:
            point = points.get(str(rec.id))
            live = {k: v for k, v in (rec.payload or {}).items() if k in LIVE_ITEM_FIELDS}
            if point is not None and point.payload is not None and live:
                point.payload.update(live)
        self.client.upsert(self.items_collection, points=list(points.values()), wait=True)

    # -- helpers -------------------------------------------------------------------------------

    def _vector(self, vector: VectorLike, what: str) -> list[float]:
        """Validate one vector before it reaches Qdrant, whose own errors name no user or item."""
        if self.dimension is None:
            raise StoreError("this store was opened for reading: no model dimension was given")
        arr = np.asarray(vector, dtype=np.float32)
        if arr.shape != (self.dimension,):
            raise ValueError(f"{what}: shape {arr.shape}, expected ({self.dimension},)")
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{what}: not finite")
        if not np.any(arr):
            raise ValueError(f"{what}: zero vector has no cosine direction")
        values: list[float] = arr.tolist()
        return values


def open_local_client(path: Path | str) -> QdrantClient:
    """Embedded Qdrant in ``path`` (created if needed); ``StoreLockedError`` if another holds it."""
    path = Path(path).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    try:
        return QdrantClient(path=str(path))
    except RuntimeError as exc:
        if _LOCKED_MARKER in str(exc):
            raise StoreLockedError(
                f"embedded Qdrant folder {path} is in use by another process (one process at a "
                "time); go through the running service, stop it, or set INTEREST_QDRANT_URL"
            ) from exc
        raise


def _named_vectors(raw: Any) -> dict[str, Float32Array]:
    """qdrant-client's ``record.vector`` (dict of lists for named vectors) → float32 arrays."""
    if not isinstance(raw, Mapping):
        return {}
    return {
        name: np.asarray(vec, dtype=np.float32)
        for name, vec in raw.items()
        if isinstance(vec, list) and vec and not isinstance(vec[0], list)
    }
