"""User and item points over one backend: embedded Qdrant by default, a server when a URL is set.

Collections (names from ``QdrantSettings``):

- ``items``: one point per item, vector ``content`` (cosine), payload = the item's payload plus
  ``item_id``. ``popularity`` is a live field: the embed workers set it from the stream workers'
  counts (:meth:`InterestStore.set_item_popularity`), and re-writing an item (``items load``
  again) keeps the stored value (see :meth:`InterestStore.upsert_items`).
- ``users``: one point per user, a named cosine vector per dimension (``short_term``,
  ``long_term``, ``search``, ``negative``, ``interest_0`` ...; the caller passes the names); a point
  may lack some of them. Payload: ``user_id``, ``seq``, ``updated_at``, per-dimension state,
  profile — all supplied by the caller.

Qdrant normalises cosine vectors on write, so what comes back is the unit vector; whatever is
needed to continue a weighted mean exactly lives in the payload (the caller's business).

``upsert_users`` replaces whole points: vectors not passed are gone afterwards. The caller always
passes the full set of vectors the user has (it read them with ``get_users`` first). A user point
may have no vectors at all: a user whose events could not be embedded yet still gets a point that
records its progress (``seq``), so replays of those events stay no-ops.

Everything that touches Qdrant goes through this class and its backend (:mod:`models.store.base`);
nothing else in the project holds a Qdrant client.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from qdrant_client.http import models as qm

from models.settings import QdrantSettings
from models.store.base import (
    ITEM_VECTOR,
    LIVE_ITEM_FIELDS,
    LIVE_ITEM_VECTORS,
    POPULARITY_FIELD,
    CollectionLayout,
    CollectionNotFound,
    Float32Array,
    StoreBackend,
    StoredUser,
    StoreError,
    StoreSchemaError,
    item_point_id,
    user_point_id,
)

VectorLike = npt.NDArray[Any] | Sequence[float]
"""Anything ``np.asarray`` turns into a 1-d float vector of the store's dimension."""

UserWrite = tuple[str, Mapping[str, VectorLike], Mapping[str, Any]]
"""(user_id, {vector name: vector}, payload) — one user for ``upsert_users``."""

ItemWrite = tuple[str, VectorLike, Mapping[str, Any]]
"""(item_id, vector, payload) — one item for ``upsert_items``."""


def open_backend(settings: QdrantSettings) -> StoreBackend:
    """The backend the settings name: a server by ``url``, else the embedded engine in ``path``.

    Raises ``StoreLockedError`` when the embedded folder is held by another process and
    ``LegacyStoreError`` when it holds an earlier version's store.
    """
    backend: StoreBackend
    if settings.url:
        from models.store.client import ClientBackend

        backend = ClientBackend.connect(
            settings.url, settings.api_key_value(), settings.timeout, settings.ca_file
        )
    else:
        from models.store.edge import EdgeBackend

        backend = EdgeBackend(settings.path)
    if settings.fault_file is not None:  # fault injection (chaos runs), off by default
        from models.store.faults import FaultInjectingBackend

        return FaultInjectingBackend(backend, settings.fault_file)
    return backend


class InterestStore:
    """Reads and writes user and item points; every method is one or two backend requests."""

    def __init__(
        self,
        backend: StoreBackend,
        *,
        dimension: int | None = None,
        users_collection: str = "users",
        items_collection: str = "items",
        settings: QdrantSettings | None = None,
    ) -> None:
        self.backend = backend
        self.dimension = dimension
        self.users_collection = users_collection
        self.items_collection = items_collection
        self.settings = settings if settings is not None else QdrantSettings()

    @classmethod
    def from_settings(cls, settings: QdrantSettings, dimension: int | None = None) -> InterestStore:
        """Open the store the settings describe (see :func:`open_backend`).

        ``dimension`` (the model's) is needed to write; readers may leave it out.
        """
        return cls(
            open_backend(settings),
            dimension=dimension,
            users_collection=settings.users_collection,
            items_collection=settings.items_collection,
            settings=settings,
        )

    @property
    def remote(self) -> bool:
        """Whether the store is a Qdrant server (other processes may use it at the same time)."""
        return self.backend.kind == "server"

    # -- lifecycle -----------------------------------------------------------------------------

    def flush(self) -> None:
        """Make every write so far durable in the segments (embedded; a no-op on a server)."""
        self.backend.flush()

    def optimize(self, *, items: bool = True, users: bool = True) -> bool:
        """Index and compact now: the items' HNSW graph for what was loaded since, the users'
        segments after many rewrites. Blocking (seconds per 100k new items); a no-op on a
        server, whose optimizers run in the background. Returns whether anything was done."""
        names = [
            n for n, on in ((self.items_collection, items), (self.users_collection, users)) if on
        ]
        return self.backend.optimize(names)

    def close(self) -> None:
        """Flush and release the backend (and, embedded, the folder)."""
        self.backend.close()

    def __enter__(self) -> InterestStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- collections ---------------------------------------------------------------------------

    def layouts(
        self,
        dimension: int,
        vector_names: Sequence[str],
        item_vectors: Mapping[str, tuple[int, str]] | None = None,
    ) -> dict[str, CollectionLayout]:
        """How ``items`` and ``users`` are created, from the sizing settings; ``item_vectors``
        are the items' vectors beyond ``content`` (``{"collab": (32, "Dot")}``)."""
        s = self.settings
        return {
            self.items_collection: CollectionLayout(
                (ITEM_VECTOR,),
                dimension,
                storage=s.items_storage,
                searched=True,
                hnsw_m=s.items_hnsw_m,
                hnsw_ef_construct=s.items_hnsw_ef_construct,
                payload_on_disk=s.payload_on_disk,
                payload_indexes={
                    POPULARITY_FIELD: "float",
                    "item_id": "keyword",
                    **s.item_payload_indexes,
                },
                extra_vectors=dict(item_vectors or {}),
            ),
            self.users_collection: CollectionLayout(
                tuple(vector_names),
                dimension,
                storage=s.users_storage,
                searched=False,
                payload_on_disk=s.payload_on_disk,
                payload_indexes={"user_id": "keyword"},
            ),
        }

    def ensure_collections(
        self,
        dimension: int,
        vector_names: Sequence[str],
        item_vectors: Mapping[str, tuple[int, str]] | None = None,
    ) -> None:
        """Create ``items`` and ``users`` if missing; check them if they exist.

        An existing collection must have every requested vector at ``dimension`` with cosine
        distance (extra vectors are tolerated, e.g. after lowering K); otherwise
        ``StoreSchemaError`` — changing the model or adding dimensions needs a new collection.
        ``item_vectors`` (derived vectors such as ``collab``, rebuilt from the users' points) are
        added to an existing items collection that lacks them, and replaced — emptied — when
        their size or distance changed.
        """
        if not vector_names:
            raise ValueError("vector_names must not be empty")
        if len(set(vector_names)) != len(vector_names):
            raise ValueError(f"duplicate vector names: {list(vector_names)}")
        self.dimension = dimension
        for name, layout in self.layouts(dimension, vector_names, item_vectors).items():
            self._ensure(name, layout)

    def _ensure(self, name: str, layout: CollectionLayout) -> None:
        if not self.backend.collection_exists(name):
            self.backend.create_collection(name, layout)
            return
        self._ensure_extra_vectors(name, layout)
        have = self.backend.vector_params(name)
        problems = []
        for v in layout.vector_names:
            params = have.get(v)
            if params is None:
                problems.append(f"no vector {v!r}")
            elif params != (layout.dimension, "Cosine"):
                problems.append(
                    f"vector {v!r} is {params[0]}-d {params[1]}, want {layout.dimension}-d Cosine"
                )
        if problems:
            raise StoreSchemaError(
                f"collection {name!r} does not match the configuration ({'; '.join(problems)}); "
                "a different model or new dimensions need a fresh collection"
            )

    def _ensure_extra_vectors(self, name: str, layout: CollectionLayout) -> None:
        """Derived vectors: added when missing, re-made empty when their shape changed."""
        if not layout.extra_vectors:
            return
        have = self.backend.vector_params(name)
        for vector, (size, distance) in layout.extra_vectors.items():
            if have.get(vector) == (size, distance):
                continue
            if vector in have:
                self.backend.drop_vector(name, vector)
            self.backend.add_vector(name, vector, size, distance)

    def item_vector_names(self) -> dict[str, tuple[int, str]]:
        """``{name: (size, distance)}`` of the items collection's vectors (empty without it)."""
        try:
            return self.backend.vector_params(self.items_collection)
        except CollectionNotFound:
            return {}

    def has_users(self) -> bool:
        """Whether the users collection exists (a fresh store has none until the first fold)."""
        return self.backend.collection_exists(self.users_collection)

    # -- users ---------------------------------------------------------------------------------

    def get_users(self, user_ids: Iterable[str]) -> dict[str, StoredUser]:
        """Stored users among ``user_ids`` (one request); users never written are absent."""
        by_point = {user_point_id(u): u for u in user_ids}
        if not by_point:
            return {}
        try:
            records = self.backend.retrieve(
                self.users_collection, list(by_point), with_payload=True, with_vectors=True
            )
        except CollectionNotFound:
            return {}
        out: dict[str, StoredUser] = {}
        for rec in records:
            user_id = by_point.get(str(rec.id))
            if user_id is None:  # cannot happen unless the server answers ids we did not ask for
                continue
            out[user_id] = StoredUser(
                vectors=named_vectors(rec.vector), payload=dict(rec.payload or {})
            )
        return out

    def delete_users(self, user_ids: Iterable[str]) -> None:
        """Delete users' points (one request; users without a point, or no users collection
        yet, are no error): their vectors, state and engagement lists go with them."""
        ids = [user_point_id(u) for u in user_ids]
        if not ids:
            return
        try:
            self.backend.delete(self.users_collection, ids)
        except CollectionNotFound:
            return

    def upsert_users(self, users: Sequence[UserWrite]) -> None:
        """Write users (one request, durable on return): each point is replaced whole.

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
            # Validated here (``_vector``), so pydantic's per-float validation of 8 × 384
            # numbers is skipped: it cost more than the engine's write.
            points[pid] = qm.PointStruct.model_construct(
                id=pid,
                vector={
                    name: self._vector(vec, f"user {user_id!r} vector {name!r}")
                    for name, vec in vectors.items()
                },
                payload=body,
            )
        self.backend.upsert(self.users_collection, list(points.values()))

    # -- items ---------------------------------------------------------------------------------

    def get_item_vectors(
        self, item_ids: Iterable[str], vector: str = ITEM_VECTOR
    ) -> dict[str, Float32Array]:
        """Vectors ``vector`` (float32; ``content`` is unit) of those of ``item_ids`` that exist
        and have one; one request."""
        return self.get_item_vectors_and_tags(item_ids, vector, with_tags=False)[0]

    def get_item_vectors_and_tags(
        self, item_ids: Iterable[str], vector: str = ITEM_VECTOR, *, with_tags: bool = True
    ) -> tuple[dict[str, Float32Array], dict[str, Any]]:
        """:meth:`get_item_vectors` plus each found item's raw ``payload["tags"]`` (items without
        tags left out), in the same one request: the fold labels interests with them."""
        by_point = {item_point_id(i): i for i in item_ids}
        if not by_point:
            return {}, {}
        try:
            records = self.backend.retrieve(
                self.items_collection,
                list(by_point),
                with_payload=["tags"] if with_tags else False,
                with_vectors=[vector],
            )
        except CollectionNotFound:
            return {}, {}
        out: dict[str, Float32Array] = {}
        tags: dict[str, Any] = {}
        for rec in records:
            item_id = by_point.get(str(rec.id))
            vector_value = named_vectors(rec.vector).get(vector)
            if item_id is not None and vector_value is not None:
                out[item_id] = vector_value
                if rec.payload and rec.payload.get("tags"):
                    tags[item_id] = rec.payload["tags"]
        return out, tags

    def set_item_vectors(self, name: str, vectors: Mapping[str, VectorLike]) -> None:
        """Set the named vector ``name`` of existing items (``{item_id: vector}``; one request):
        the items' other vectors and payload stay. Vectors must be finite (zero is allowed:
        derived vectors are scored by dot product)."""
        points: dict[str, dict[str, list[float]]] = {}
        for item_id, vector in vectors.items():
            arr = np.asarray(vector, dtype=np.float32)
            if arr.ndim != 1 or not arr.size or not np.all(np.isfinite(arr)):
                raise ValueError(f"item {item_id!r} vector {name!r}: not a finite 1-d vector")
            points[item_point_id(item_id)] = {name: arr.tolist()}
        self.backend.update_vectors(self.items_collection, points)

    def scroll_all(
        self,
        collection: str,
        *,
        with_payload: bool | Sequence[str] = True,
        with_vectors: bool | Sequence[str] = False,
        batch: int = 512,
    ) -> Iterator[list[qm.Record]]:
        """Every point of ``collection`` in point-id order, ``batch`` at a time (nothing when
        the collection does not exist)."""
        offset: str | int | None = None
        while True:
            try:
                records, offset = self.backend.scroll(
                    collection, limit=batch, offset=offset, with_payload=with_payload,
                    with_vectors=with_vectors,
                )  # fmt: skip
            except CollectionNotFound:
                return
            if records:
                yield records
            if offset is None:
                return

    def upsert_items(self, items: Sequence[ItemWrite]) -> None:
        """Write items (two requests: one retrieve, one upsert, durable on return).

        Each item's vector and payload are replaced by the ones given (payload gets
        ``item_id``), except the live fields (``LIVE_ITEM_FIELDS``: ``popularity``): an item
        that already has one keeps its stored value, so re-loading the catalog does not reset
        what the workers measured; a value in ``payload`` only seeds an item that has none.
        Likewise an item keeps its derived vectors (``LIVE_ITEM_VECTORS``: ``collab``).
        Later entries for the same item win.

        Against a Qdrant server, a popularity value another process sets between the two
        requests is overwritten by the one read just before (the next popularity update
        corrects it); embedded, one process, one store thread, does both.
        """
        points: dict[str, qm.PointStruct] = {}
        for item_id, vector, payload in items:
            body = dict(payload)
            if body.setdefault("item_id", item_id) != item_id:
                raise ValueError(f"item {item_id!r}: payload item_id is {body['item_id']!r}")
            pid = item_point_id(item_id)
            points[pid] = qm.PointStruct.model_construct(
                id=pid,
                vector={ITEM_VECTOR: self._vector(vector, f"item {item_id!r}")},
                payload=body,
            )
        if not points:
            return
        live_vectors = [v for v in LIVE_ITEM_VECTORS if v in self.item_vector_names()]
        stored = self.backend.retrieve(
            self.items_collection,
            list(points),
            with_payload=list(LIVE_ITEM_FIELDS),
            with_vectors=live_vectors or False,
        )
        for rec in stored:
            point = points.get(str(rec.id))
            if point is None:
                continue
            live = {k: v for k, v in (rec.payload or {}).items() if k in LIVE_ITEM_FIELDS}
            if point.payload is not None and live:
                point.payload.update(live)
            stored_vectors = named_vectors(rec.vector)
            kept = {k: stored_vectors[k].tolist() for k in live_vectors if k in stored_vectors}
            if kept and isinstance(point.vector, dict):
                point.vector.update(kept)
        self.backend.upsert(self.items_collection, list(points.values()))

    def set_item_popularity(self, values: Mapping[str, float]) -> int:
        """Set the ``popularity`` payload field of the items in ``values`` that exist (one
        retrieve, one batch of payload updates); return how many were set. Items not in the
        collection are left alone: no point is created."""
        by_point = {item_point_id(item_id): value for item_id, value in values.items()}
        if not by_point:
            return 0
        try:
            existing = self.backend.retrieve(
                self.items_collection, list(by_point), with_payload=False, with_vectors=False
            )
        except CollectionNotFound:
            return 0
        payloads = {str(r.id): {POPULARITY_FIELD: by_point[str(r.id)]} for r in existing}
        self.backend.set_payloads(self.items_collection, payloads)
        return len(payloads)

    def query_items(self, request: qm.QueryRequest) -> list[qm.ScoredPoint]:
        """One Query API request on the items collection (the recommend plan's), with the
        search settings (``search_hnsw_ef``) on every stage that searches and sets none."""
        params = self.search_params()
        if params is not None:
            request = with_search_params(request, params)
        return self.backend.query(self.items_collection, request)

    def search_params(self) -> qm.SearchParams | None:
        """How item searches run: ``hnsw_ef`` from the settings, and for int8-quantised items
        a rescoring of twice the candidates with the original vectors."""
        s = self.settings
        quantization = None
        if s.items_storage == "int8":
            quantization = qm.QuantizationSearchParams(rescore=True, oversampling=2.0)
        if s.search_hnsw_ef is None and quantization is None:
            return None
        return qm.SearchParams(hnsw_ef=s.search_hnsw_ef, quantization=quantization)

    def sample_item_vectors(self, limit: int) -> list[tuple[str, Float32Array]]:
        """Up to ``limit`` items' content vectors, the first in point-id order (a hash order, so
        a pseudo-random sample); empty without items."""
        try:
            records, _ = self.backend.scroll(
                self.items_collection, limit=limit, with_payload=False, with_vectors=[ITEM_VECTOR]
            )
        except CollectionNotFound:
            return []
        out = []
        for record in records:
            vec = named_vectors(record.vector).get(ITEM_VECTOR)
            if vec is not None:
                out.append((str(record.id), vec))
        return out

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


def with_search_params(request: qm.QueryRequest, params: qm.SearchParams) -> qm.QueryRequest:
    """``request`` with ``params`` on the request and every prefetch that sets none: the
    searches of a multi-stage query happen in its prefetches, not in the formula on top."""

    def stage(p: qm.Prefetch) -> qm.Prefetch:
        nested = (
            p.prefetch if isinstance(p.prefetch, list) else [p.prefetch] if p.prefetch else None
        )
        return p.model_copy(
            update={
                "params": p.params or params,
                "prefetch": None if nested is None else [stage(n) for n in nested],
            }
        )

    top = (
        request.prefetch
        if isinstance(request.prefetch, list)
        else [request.prefetch]
        if request.prefetch
        else None
    )
    return request.model_copy(
        update={
            "params": request.params or params,
            "prefetch": None if top is None else [stage(p) for p in top],
        }
    )


def named_vectors(raw: Any) -> dict[str, Float32Array]:
    """A record's vectors (dict of lists for named vectors) → float32 arrays."""
    if not isinstance(raw, Mapping):
        return {}
    return {
        name: np.asarray(vec, dtype=np.float32)
        for name, vec in raw.items()
        if isinstance(vec, list) and vec and not isinstance(vec[0], list)
    }
